"""An area's stop-all lives STOP_ALL_TTL_S: held through a broker outage and sent late, it is void."""

from __future__ import annotations

import json
from datetime import datetime

from cunxiang_shared import protocol
from cunxiang_shared.signing import Signer
from devices.commands import CommandSender
from devices.transport import MemoryLink
from scheduler.flows import send_stops
from scheduler.lifecycle import StopPlan

VILLAGE_TOPIC = protocol.area_command_topic("341225100201")


def _life_s(payload: bytes) -> tuple[object, float]:
    message = json.loads(payload)
    issued = datetime.fromisoformat(message["issued_at"])
    expires = datetime.fromisoformat(message["expires_at"])
    return message["occurrence_id"], (expires - issued).total_seconds()


def test_the_stop_all_of_an_area_expires_in_seconds_the_stop_of_an_airing_keeps_the_usual_life():
    link = MemoryLink()
    plan = StopPlan(occurrence_ids=[7], topics={7: [VILLAGE_TOPIC]}, stop_all_topic=VILLAGE_TOPIC)
    assert send_stops(sender=CommandSender(link=link, signer=Signer.generate()), plan=plan) == 2
    lives = dict(_life_s(payload) for _, payload in link.published)
    # a stop of one airing can only ever stop that airing: it may arrive late
    assert lives[7] == protocol.COMMAND_TTL_S
    # "stop whatever plays" means now: a late one must not silence a later airing
    assert lives[None] == protocol.STOP_ALL_TTL_S == 30.0
