"""The error family in the console's words: a status (api/errors.py, the same as the API's) and a
Chinese message chosen by the error's type and `reason`, never by its English text."""

from __future__ import annotations

from api.errors import status_of
from api.web.session import PageError
from core.errors import Conflict, CunxiangError, Forbidden, InvalidInput, NotFound, Unavailable

# (type, reason) -> message; a reason of None is the type's fallback.
MESSAGES: dict[tuple[type[CunxiangError], str | None], str] = {
    (Forbidden, "emergency_second_person"): "应急广播需要第二个人审核：创建人不能批准自己的应急广播。",
    (Forbidden, "cancel"): "只有广播的创建人或本辖区审核员可以取消它。",
    (Forbidden, "author"): "只有广播的创建人（或管理员）可以提交它。",
    (Forbidden, "area"): "不在您的管辖范围内。",
    (Forbidden, "role"): "您的角色不能执行此操作。",
    (Forbidden, None): "您无权执行此操作。",
    (Conflict, "start_passed"): "播出时间在等待审核期间已过，请驳回后让作者重新提交。",
    (Conflict, None): "这条广播的状态已经改变，不能再执行此操作。",
    (NotFound, None): "没有找到要操作的对象。",
    (InvalidInput, None): "输入有误：{message}",
    (Unavailable, "stop_not_sent"): "已取消，但停止指令未能发送到喇叭，请检查消息服务器。",
    (Unavailable, "command_not_sent"): "指令未能发送到喇叭，请检查消息服务器。",
    (Unavailable, None): "服务暂不可用，请稍后再试（{message}）。",
}


def message_of(exc: CunxiangError, overrides: dict[type[CunxiangError], str] | None = None) -> str:
    """The Chinese message for an error: by (type, reason), then the caller's text for its type,
    then the type's own fallback; `{message}` in a text stands for the error's own message."""
    for cls in type(exc).__mro__:
        if (cls, exc.reason) in MESSAGES and exc.reason is not None:
            return _fill(MESSAGES[(cls, exc.reason)], exc)
    for cls in type(exc).__mro__:
        if overrides and cls in overrides:
            return _fill(overrides[cls], exc)
        if (cls, None) in MESSAGES:
            return _fill(MESSAGES[(cls, None)], exc)
    return exc.message


def _fill(template: str, exc: CunxiangError) -> str:
    # not str.format: the English message may hold braces of its own
    return template.replace("{message}", exc.message)


def page_error(exc: CunxiangError, overrides: dict[type[CunxiangError], str] | None = None) -> PageError:
    """The error as an error page: the API's status, the console's words."""
    return PageError(status_of(exc), message_of(exc, overrides))
