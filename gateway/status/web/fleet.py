"""The page's figures and verdict for a state document: what the page shows, and what
MQTT's problem sensor says (the same "is it delivering?" answer everywhere).

:func:`with_state` lays the live state (destinations' reachability and windows,
devices, alarms, worklist, box health) over the ledger's figures; the page's
overview uses it, and :func:`document_verdict` gives MQTT the verdict of the state
document it is about to publish.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.core.config import DermGateConfig
from gateway.status.web.data import Figures, read_figures, verdict

__all__ = ["document_verdict", "read_config_figures", "with_state"]

log = logging.getLogger(__name__)


def with_state(fig: Figures, doc: dict[str, Any]) -> Figures:
    """``fig`` with the live parts of the state document ``doc`` laid over it."""
    known = {str(d.get("name")): d for d in doc.get("destinations", [])}
    overlaid = []
    for dest in fig.destinations:
        state = known.get(dest.name, {})
        error = state.get("last_error")
        overlaid.append(
            dataclasses.replace(
                dest,
                reachable=state.get("reachable"),
                last_error=error.get("message") if isinstance(error, dict) else dest.last_error,
                window_open=bool(state.get("window_open", True)),
                next_window=state.get("next_window"),
                send_now=bool(state.get("send_now")),
            )
        )
    return dataclasses.replace(
        fig,
        destinations=overlaid,
        devices=list(doc.get("devices", [])),
        alarms=list(doc.get("alarms", [])),
        worklist=dict(doc.get("worklist") or {}),
        health=dict(doc.get("health") or {}),
    )


async def read_config_figures(config: DermGateConfig) -> Figures:
    """The ledger's and the disk's figures for ``config`` (on a worker thread)."""
    dests = [(d.name, d.host, d.port, d.confirms) for d in config.destinations]
    return await asyncio.to_thread(
        read_figures,
        config.ledger_path(),
        config.spool_dir(),
        config.spool.reserve_mb * 1024 * 1024,
        dests,
    )


def document_verdict(
    config: DermGateConfig,
) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """A function giving the verdict ``{"colour", "headline", "reasons"}`` of a state
    document (reasons hold names, counts and fixed phrases: no patient data)."""

    async def judge(doc: dict[str, Any]) -> dict[str, Any]:
        try:
            fig = with_state(await read_config_figures(config), doc)
        except (OSError, sqlite3.Error) as err:  # never a reason to drop the broker link
            log.warning("verdict for MQTT: cannot read the ledger or the disk (%s)", err)
            return {
                "colour": "red",
                "headline": "The ledger or the spool's disk cannot be read",
                "reasons": ["See the box's log."],
            }
        said = verdict(fig)
        return {"colour": said.colour, "headline": said.headline, "reasons": said.reasons}

    return judge
