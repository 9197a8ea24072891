"""Fleet status over MQTT: online/offline, the state document, numbered events, HA discovery.

Topics (``P`` = ``<topic_prefix>/<gateway id>``):

``P/status``  retained ``online`` once connected; the same topic is the retained Last
              Will ``offline``, which the broker publishes when the box vanishes (killed,
              unplugged) within about 1.5 × keepalive. A clean stop publishes ``offline``
              itself (a clean DISCONNECT does not fire the Will).
``P/state``   retained JSON (:mod:`gateway.status.snapshot`), published at connect, on
              change (at most once per ``state_min_interval``) and every minute, plus the
              block ``"mqtt": {"events_dropped": N, "reconnects": N}`` and the verdict,
              judged as each one goes out (so one that changes with time alone, the
              document saying the same, shows within the minute).
``P/events``  one JSON object per event, QoS 1, not retained:
              ``{"seq", "kind", "time", "gateway", "dropped_before", ...fields}``
              (:mod:`gateway.core.events`). ``seq`` rises by one per event of this run
              (it starts again at 1 when the gateway restarts: ``uptime_s`` in the state
              tells); ``dropped_before`` counts events lost from a full buffer just
              before this one.

Decisions (aiomqtt facts, DESIGN.md §8):

* A **new** ``aiomqtt.Client`` per connection attempt (a client is never reused
  after a failure), inside our own jittered, capped backoff loop; a reconnect
  counts only once the broker accepted us (CONNACK). The outage is logged once and
  the recovery once.
* Events go through our own bounded outbox (a bus subscription of
  ``events_buffer`` entries): an entry is removed only after ``publish`` returned
  (QoS 1: at PUBACK), so events during an outage are sent after reconnect; one in
  flight when the link broke is sent again (receivers tolerate duplicates by
  ``seq``). When the outbox is full the oldest entry is dropped and counted.
* TLS always verifies the broker's certificate and host name; a rejected client
  certificate shows up only as a time-out, so the log names that likely cause.
* A stop (cancellation) always ends the stage within :data:`STOP_BUDGET` seconds:
  ``offline`` is published (retained) and the client disconnects, each bounded, with
  a broker that is up, gone or hanging. Python 3.11's ``asyncio.wait_for`` (used
  inside aiomqtt's ``publish``, ``subscribe`` and connect) returns normally when what
  it waits for completes in the same loop iteration as the cancellation
  (CPython gh-86296), so a stop that lands just as a PUBACK or an event arrives would
  be lost and the loops around it would run on until ``stop_timeout``. Every such
  await is followed by :func:`_raise_if_stopping` (the task's pending cancellation
  count), our own waits use ``asyncio.timeout``, and an error while stopping is
  treated as the stop it is.
* Home Assistant discovery (:mod:`gateway.status.ha_discovery`): retained configs per
  sensor and binary sensor, with ``device``, ``origin`` and ``availability_topic`` =
  ``P/status``; sent at every connect and again when ``online`` arrives on
  ``homeassistant/status``. This box's retained connectivity configs of destinations
  no longer configured are deleted when seen (subscribed at connect).
* With a ``verdict`` function (the page's "is it delivering?"), the published state
  document carries ``"verdict"``, which the problem binary sensor reads.

Nothing published carries patient data: the state and events hold only counts,
states and ids the box assigns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt

from gateway.core.backoff import Backoff
from gateway.core.config import MqttSettings
from gateway.core.events import EventBus
from gateway.status.ha_discovery import (
    BINARY_PREFIX,
    SENSORS,
    DiscoveryInfo,
    discovery_messages,
    stale_destination_topic,
)
from gateway.status.snapshot import GatewayState, stable_part

log = logging.getLogger(__name__)

HA_STATUS = "homeassistant/status"
_PUBLISH_TIMEOUT = 10.0
#: Longest a stop may spend on ``offline`` and the disconnect, broker up or not.
STOP_BUDGET = 3.0
#: Part of :data:`STOP_BUDGET` left for the disconnect after ``offline``.
_DISCONNECT_SHARE = 1.0
_STATE_POLL = 5.0
_STATE_HEARTBEAT = 60.0

#: The sensors' keys (topics ``homeassistant/sensor/<id>_<key>/config``).
HA_SENSORS = SENSORS


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context of ``[mqtt]`` (None without TLS); reads the files (blocking)."""
    if not settings.tls:
        return None
    ca = str(settings.tls_ca) if settings.tls_ca is not None else None
    context = ssl.create_default_context(cafile=ca)
    if settings.tls_cert is not None and settings.tls_key is not None:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return context


def read_password(settings: MqttSettings) -> str | None:
    """The first line of ``password_file`` (None without one); blocking."""
    if settings.password_file is None:
        return None
    text = settings.password_file.read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""


def classify_link_error(err: BaseException, *, tls: bool) -> dict[str, str]:
    """A connection error as ``{"code", "message"}``: a fixed phrase, never the
    broker's text or a secret. Codes: ``local_file``, ``not_authorised``, ``tls``,
    ``timeout``, ``refused``, ``unknown_host``, ``other``."""
    text = (str(err) or type(err).__name__).lower()
    if isinstance(err, FileNotFoundError | PermissionError):
        return {"code": "local_file", "message": "cannot read the password or TLS files"}
    if "not authori" in text or "bad user name or password" in text:
        code, message = "not_authorised", "the broker refused the user name or password"
    elif "certificate" in text or isinstance(err, ssl.SSLError):
        code, message = "tls", "TLS failed: the broker's certificate was not accepted"
    elif "timed out" in text:
        code = "timeout"
        message = "the broker did not answer in time" + (
            " (with TLS often a rejected client certificate)" if tls else ""
        )
    elif "refused" in text:
        code, message = "refused", "nothing accepts connections at the broker's address"
    elif "name or service not known" in text or "name resolution" in text:
        code, message = "unknown_host", "the broker's host name is not known"
    else:
        code, message = "other", "the connection to the broker failed"
    return {"code": code, "message": message}


async def probe_broker(
    settings: MqttSettings, gateway_id: str, timeout: float = 5.0
) -> dict[str, str] | None:
    """Connect as the link does (address, login, TLS) and disconnect at once.

    None when the broker accepted us (CONNACK), else the error as
    :func:`classify_link_error` gives it. The client id differs from the link's
    (``dermgate-<id>-check``), so the link's own session is not taken over, and
    there is no Will: the probe says nothing on the status topic.
    """
    try:
        password = await asyncio.to_thread(read_password, settings)
        tls = await asyncio.to_thread(tls_context, settings)
        client = aiomqtt.Client(
            settings.host,
            settings.port,
            username=settings.username,
            password=password,
            identifier=f"dermgate-{gateway_id}-check",
            keepalive=settings.keepalive,
            tls_context=tls,
            timeout=timeout,
        )
        async with client:
            return None
    except (aiomqtt.MqttError, OSError, ssl.SSLError, ValueError) as err:
        return classify_link_error(err, tls=settings.tls)


def _stop_requested() -> bool:
    """Whether the running task was asked to stop (even if the request was swallowed)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _raise_if_stopping() -> None:
    """Re-raise a stop that ``asyncio.wait_for`` swallowed (see the module docstring)."""
    if _stop_requested():
        raise asyncio.CancelledError


class MqttPublisher:
    """The MQTT stage: connect, publish, reconnect for ever."""

    def __init__(
        self,
        settings: MqttSettings,
        state: GatewayState,
        bus: EventBus,
        clock: Callable[[], float] = time.monotonic,
        *,
        verdict: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
        configuration_url: str | None = None,
    ) -> None:
        """``verdict``: the page's verdict for a state document (added to it as
        ``"verdict"``); ``configuration_url``: the page's address for Home Assistant
        (:func:`gateway.status.ha_discovery.page_url`; None: left out)."""
        self.settings = settings
        self._verdict = verdict
        self.configuration_url = configuration_url
        self.state = state
        self.gateway_id = state.gateway_id
        base = f"{settings.topic_prefix}/{self.gateway_id}"
        self.status_topic = f"{base}/status"
        self.state_topic = f"{base}/state"
        self.events_topic = f"{base}/events"
        # Subscribed now, so events are kept from the start, before any connection.
        self.outbox = bus.subscribe(settings.events_buffer)
        self._changed = bus.watch()
        self._clock = clock
        self.reconnects = 0
        self.connected = False
        self._last_state: dict[str, Any] | None = None
        self._last_state_at = 0.0
        self.last_error: dict[str, str] | None = None
        state.sections["mqtt"] = self.status

    def status(self) -> dict[str, Any]:
        """The ``mqtt`` section of the state document."""
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "events_dropped": self.outbox.dropped,
            "events_waiting": len(self.outbox),
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ connection

    def _tls_context(self) -> ssl.SSLContext | None:
        return tls_context(self.settings)

    def _password(self) -> str | None:
        return read_password(self.settings)

    def _client(self, password: str | None, tls: ssl.SSLContext | None) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=password,
            identifier=f"dermgate-{self.gateway_id}",
            keepalive=s.keepalive,
            will=aiomqtt.Will(self.status_topic, "offline", qos=1, retain=True),
            tls_context=tls,
            timeout=_PUBLISH_TIMEOUT,
        )

    def _likely_cause(self, err: BaseException) -> str:
        text = str(err) or type(err).__name__
        if self.settings.tls and "timed out" in text.lower():
            return f"{text} (with TLS this is often a rejected client certificate)"
        return text

    def _classify(self, err: BaseException) -> dict[str, str]:
        """The connection error as a code and a plain phrase (for the state)."""
        return classify_link_error(err, tls=self.settings.tls)

    async def run(self, ready: Callable[[], None]) -> None:
        """Stay connected until cancelled; then say ``offline`` and disconnect."""
        s = self.settings
        backoff = Backoff(initial=1.0, cap=max(1.0, s.reconnect_max))
        ready()
        ever_connected = False
        down_since: float | None = None
        while True:
            try:
                password, tls = await asyncio.to_thread(self._setup)
                async with self._client(password, tls) as client:
                    # Entering the client returned: the broker sent CONNACK.
                    if ever_connected:
                        self.reconnects += 1
                    if down_since is not None:
                        log.info(
                            "MQTT broker %s:%d reachable again after %.0f s; %d event(s) to send",
                            s.host,
                            s.port,
                            self._clock() - down_since,
                            len(self.outbox),
                        )
                    else:
                        log.info("MQTT connected to %s:%d as %s", s.host, s.port, self.status_topic)
                    ever_connected = True
                    down_since = None
                    backoff.reset()
                    self.connected = True
                    self.last_error = None
                    try:
                        _raise_if_stopping()  # a stop that came with the CONNACK
                        await self._session(client)
                    finally:
                        if _stop_requested():
                            await self._say_offline(client)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # MQTT errors, OSError, ssl errors: retry for ever
                self.connected = False
                if _stop_requested():  # e.g. the disconnect timed out: the stop goes on
                    raise asyncio.CancelledError from err
                self.last_error = self._classify(err)
                if down_since is None:
                    down_since = self._clock()
                    log.warning(
                        "MQTT broker %s:%d %s: %s; retrying, events are kept (up to %d)",
                        s.host,
                        s.port,
                        "connection lost" if ever_connected else "not reachable",
                        self._likely_cause(err),
                        s.events_buffer,
                    )
            finally:
                self.connected = False
            await asyncio.sleep(backoff.next_delay())

    def _setup(self) -> tuple[str | None, ssl.SSLContext | None]:
        """Password and TLS context, read anew per attempt (blocking file reads)."""
        return self._password(), self._tls_context()

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Publish ``offline`` and bound the disconnect that follows (the stop path).

        Together they take at most :data:`STOP_BUDGET` seconds: a broker that does not
        confirm ``offline`` in time is left (its DISCONNECT still goes out).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_BUDGET
        try:
            await client.publish(
                self.status_topic,
                "offline",
                qos=1,
                retain=True,
                timeout=STOP_BUDGET - _DISCONNECT_SHARE,
            )
        except aiomqtt.MqttError as err:
            log.warning(
                "MQTT: the broker did not take 'offline' at the stop (%s)", self._likely_cause(err)
            )
        # aiomqtt waits this long for the DISCONNECT to go out when the client exits.
        client.timeout = max(0.1, deadline - loop.time())

    # ------------------------------------------------------------------ session

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: str, *, retain: bool = False
    ) -> None:
        """Publish at QoS 1 (returns at PUBACK); a stop requested meanwhile is not lost."""
        await client.publish(topic, payload, qos=1, retain=retain)
        _raise_if_stopping()

    async def _session(self, client: aiomqtt.Client) -> None:
        await self._publish(client, self.status_topic, "online", retain=True)
        if self.settings.homeassistant_discovery:
            await client.subscribe(HA_STATUS, qos=1)
            _raise_if_stopping()
            await client.subscribe(f"{BINARY_PREFIX}/{self.gateway_id}/+/config", qos=1)
            _raise_if_stopping()
            await self._discovery(client)
        await self._publish_state(client)
        # The loops run in a task of their own: when a child fails, Python 3.11's
        # TaskGroup leaves its parent task counted as cancelled for good (CPython
        # gh-116720), and in this task that count must mean "stop" and nothing else.
        await asyncio.create_task(self._loops(client), name="mqtt-session")
        _raise_if_stopping()

    async def _loops(self, client: aiomqtt.Client) -> None:
        """Listen, send events, send the state; ends with the connection (MqttError)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._listen(client))
                group.create_task(self._drain_events(client))
                group.create_task(self._state_loop(client))
        except* aiomqtt.MqttError as errors:
            raise errors.exceptions[0] from None

    async def _listen(self, client: aiomqtt.Client) -> None:
        """Home Assistant's birth message → discovery again; ends with the connection."""
        async for message in client.messages:
            if message.topic.matches(HA_STATUS) and message.payload in (b"online", "online"):
                log.info("Home Assistant announced itself: discovery sent again")
                await self._discovery(client)
            elif message.payload and stale_destination_topic(
                message.topic.value, self.gateway_id, self.state.configured
            ):
                log.info("Home Assistant: the removed destination's sensor is deleted")
                await self._publish(client, message.topic.value, "", retain=True)
        raise aiomqtt.MqttError("connection closed")

    async def _drain_events(self, client: aiomqtt.Client) -> None:
        while True:
            await self.outbox.wait()
            seq, event = self.outbox.peek()
            drops = self.outbox.unreported_drops
            payload = {**event, "gateway": self.gateway_id, "dropped_before": drops}
            await self._publish(client, self.events_topic, json.dumps(payload))
            self.outbox.unreported_drops -= drops
            if not self.outbox.pop(seq):
                self.outbox.undrop()  # dropped while in flight, but it did go out

    async def _state_loop(self, client: aiomqtt.Client) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STATE_POLL):  # not wait_for: see the docstring
                    await self._changed.wait()
            wait = self._last_state_at + self.settings.state_min_interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._changed.clear()
            await self._publish_state(client, only_if_changed=True)

    async def state_document(self) -> dict[str, Any]:
        """The state document as published (with the ``mqtt`` block and the verdict)."""
        document = await self.state.snapshot()
        if self._verdict is not None:
            document["verdict"] = await self._verdict(document)
        return document

    async def _publish_state(
        self, client: aiomqtt.Client, *, only_if_changed: bool = False
    ) -> None:
        # The verdict reads the ledger on a connection of its own: judged only when the
        # document changed (or the heartbeat is due), so an idle box's 5 s polls open
        # no connection (each one dirtied a page of the ledger's -shm on the disk).
        document = await self.state.snapshot()
        stable = stable_part(document)
        mqtt = document["mqtt"]
        stable["mqtt"] = {"dropped": mqtt["events_dropped"], "reconnects": mqtt["reconnects"]}
        due = self._clock() - self._last_state_at >= _STATE_HEARTBEAT
        if only_if_changed and stable == self._last_state and not due:
            return
        if self._verdict is not None:
            document["verdict"] = await self._verdict(document)
        await self._publish(client, self.state_topic, json.dumps(document), retain=True)
        self._last_state = stable
        self._last_state_at = self._clock()

    async def _discovery(self, client: aiomqtt.Client) -> None:
        for topic, config in self.discovery_messages():
            await self._publish(client, topic, json.dumps(config), retain=True)

    def discovery_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Home Assistant discovery: (topic, config) per entity."""
        return discovery_messages(
            DiscoveryInfo(
                gateway_id=self.gateway_id,
                software=self.state.software,
                state_topic=self.state_topic,
                status_topic=self.status_topic,
                destinations=tuple(self.state.configured),
                configuration_url=self.configuration_url,
            )
        )
