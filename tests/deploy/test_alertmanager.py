"""Alerts reach people: a real Prometheus and a real Alertmanager route wattmux's alerts.

Method:

1. The daemon runs in-process over the simulated site of sim_daemon (one miner
   that closes every connection, one market feed that always fails), and one
   miner is made hot (its ambient air at 95 °C).
2. An SMTP sink (aiosmtpd) and a webhook receiver listen on free loopback ports.
3. Alertmanager (Debian's package) starts with deploy/alertmanager/alertmanager.yml,
   only its addresses pointed at the sink and the receiver and its waits shortened.
4. Prometheus scrapes the daemon every second and evaluates the shipped rules
   with every ``for:`` set to 0 s, sending to that Alertmanager.
5. Checked: the warning (a feed down) reaches the webhook only; the critical
   (a hot machine) reaches the webhook and an e-mail; a maintenance window on the
   hot machine (``PUT /v1/maintenance``) creates a silence in Alertmanager that
   holds its alert, and ending the window expires it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import re
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scheduler.api.auth import Role, TokenEntry, hash_token, new_token
from scheduler.control.maintenance import AlertSilencer
from scheduler.core.reasons import SAFETY_REASONS
from tests.deploy.sim_daemon import SCRAPE_TOKEN, sim_daemon, wait_ticks
from tests.deploy.test_real_prometheus import free_port, query, wait_for_scrapes

ROOT = Path(__file__).resolve().parents[2]
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "wattmux.rules.yml"
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
ADDRESS = "127.80.5.250"
OPERATOR = new_token()

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        PROMETHEUS is None or ALERTMANAGER is None,
        reason="prometheus or prometheus-alertmanager missing: make test installs them",
    ),
]


class Inbox:
    """What the receivers got."""

    def __init__(self) -> None:
        self.webhook: list[dict[str, Any]] = []
        self.mails: list[email.message.Message] = []
        self.lock = threading.Lock()

    def webhook_alerts(self) -> set[tuple[str, str]]:
        with self.lock:
            return {
                (a["labels"]["alertname"], a["status"])
                for body in self.webhook
                for a in body["alerts"]
            }

    def mail_subjects(self) -> list[str]:
        with self.lock:
            return [str(m["Subject"]) for m in self.mails]


@contextlib.contextmanager
def webhook_receiver(inbox: Inbox) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("content-length", "0")), 1 << 20)
            body = json.loads(self.rfile.read(length))
            with inbox.lock:
                inbox.webhook.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer((ADDRESS, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{ADDRESS}:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def smtp_sink(inbox: Inbox) -> Iterator[str]:
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            with inbox.lock:
                inbox.mails.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    port = free_port(ADDRESS)
    controller = Controller(Handler(), hostname=ADDRESS, port=port)
    controller.start()
    try:
        yield f"{ADDRESS}:{port}"
    finally:
        controller.stop()


def alertmanager_config(webhook: str, smarthost: str) -> str:
    """The shipped config with only addresses and waits changed."""
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    config["global"]["smtp_smarthost"] = smarthost
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1m")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook
    return yaml.safe_dump(config)


async def wait_ready(client: httpx.AsyncClient, process: Any, log: Path, what: str) -> None:
    for _ in range(200):
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/-/ready")).status_code == 200:
                return
        if process.returncode is not None:
            text = await asyncio.to_thread(log.read_text)
            raise AssertionError(f"{what} exited: {text[-2000:]}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not ready in 20 s")


@contextlib.asynccontextmanager
async def server(
    tmp_path: Path, name: str, args: list[str], port: int
) -> AsyncIterator[httpx.AsyncClient]:
    log = tmp_path / f"{name}.log"
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=log.open("wb")
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://{ADDRESS}:{port}", timeout=5, trust_env=False
        ) as client:
            await wait_ready(client, process, log, name)
            yield client
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)


async def eventually(predicate: Any, timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s / 0.2)):
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_alerts_reach_webhook_and_email_and_maintenance_silences(tmp_path: Path) -> None:
    assert ALERTMANAGER is not None and PROMETHEUS is not None
    inbox = Inbox()
    with webhook_receiver(inbox) as webhook, smtp_sink(inbox) as smarthost:
        am_config = tmp_path / "alertmanager.yml"
        am_config.write_text(alertmanager_config(webhook, smarthost))
        am_port = free_port(ADDRESS)
        am_args = [
            ALERTMANAGER,
            f"--config.file={am_config}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address={ADDRESS}:{am_port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        async with (
            server(tmp_path, "alertmanager", am_args, am_port) as am,
            sim_daemon(tmp_path, subnet=5) as sim,
        ):
            hot = "s21-001"
            sim.site.miners[hot].physics.ambient_c = 95.0
            await wait_ticks(sim, 2)
            rules = tmp_path / "wattmux.rules.yml"
            rules.write_text(re.sub(r"for: \d+m", "for: 0s", RULES.read_text()))
            token_file = tmp_path / "wattmux.token"
            token_file.write_text(SCRAPE_TOKEN + "\n")
            prom_config = tmp_path / "prometheus.yml"
            prom_config.write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                f"rule_files:\n  - {rules}\n"
                "alerting:\n  alertmanagers:\n    - static_configs:\n"
                f"        - targets: ['{ADDRESS}:{am_port}']\n"
                "scrape_configs:\n  - job_name: wattmux\n    scrape_timeout: 1s\n"
                f"    authorization:\n      type: Bearer\n      credentials_file: {token_file}\n"
                f"    static_configs:\n      - targets: ['{sim.config.api.listen}']\n"
            )
            prom_port = free_port(ADDRESS)
            prom_args = [
                PROMETHEUS,
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={ADDRESS}:{prom_port}",
                "--log.level=warn",
            ]
            async with server(tmp_path, "prometheus", prom_args, prom_port) as prom:
                await wait_for_scrapes(prom, 3)
                assert await query(prom, "wattmux_device_temperature_celsius > 85")

                async def routed() -> bool:
                    got = inbox.webhook_alerts()
                    return {
                        ("WattmuxInputSourceDown", "firing"),
                        ("WattmuxMachineHot", "firing"),
                    } <= got and any("WattmuxMachineHot" in s for s in inbox.mail_subjects())

                await eventually(routed, 60, "the alerts at the webhook and in the mailbox")
                subjects = inbox.mail_subjects()
                assert all("[wattmux firing]" in s for s in subjects), subjects
                # warnings reach the webhook only; critical ones also reach the on-call mailbox
                assert not any("WattmuxInputSourceDown" in s for s in subjects), subjects
                hot_mail = next(m for m in inbox.mails if "WattmuxMachineHot" in m["Subject"])
                assert hot_mail["To"] == "oncall@site.example"

                # a maintenance window on the hot machine silences its alert
                sim.daemon.maintenance.silencer = AlertSilencer(f"http://{ADDRESS}:{am_port}")  # type: ignore[union-attr]
                security = sim.daemon.security
                assert security is not None
                security.authenticator.replace(
                    [
                        *security.authenticator.entries,
                        TokenEntry("ops", Role.OPERATOR, hash_token(OPERATOR)),
                    ]
                )
                async with httpx.AsyncClient(
                    base_url=sim.base_url,
                    headers={"authorization": f"Bearer {OPERATOR}"},
                    trust_env=False,
                ) as api:
                    opened = await api.put(
                        f"/v1/maintenance/{hot}", json={"duration_seconds": 600, "note": "fans"}
                    )
                    assert opened.status_code == 200, opened.text
                    silence_id = opened.json()["silence_id"]
                    assert silence_id and opened.json()["silence_error"] is None

                    silence = (await am.get(f"/api/v2/silence/{silence_id}")).json()
                    assert silence["status"]["state"] == "active"
                    assert silence["matchers"][0]["name"] == "device"

                    async def silenced() -> bool:
                        alerts = (await am.get("/api/v2/alerts")).json()
                        hot_alerts = [
                            a for a in alerts if a["labels"].get("alertname") == "WattmuxMachineHot"
                        ]
                        return bool(hot_alerts) and all(
                            a["status"]["state"] == "suppressed"
                            and silence_id in a["status"]["silencedBy"]
                            for a in hot_alerts
                        )

                    await eventually(silenced, 20, "the hot machine's alert silenced")
                    others = (await am.get("/api/v2/alerts", params={"silenced": "false"})).json()
                    assert any(
                        a["labels"]["alertname"] == "WattmuxInputSourceDown" for a in others
                    ), "the silence holds only the machine's alerts"
                    windows = (await api.get("/v1/maintenance")).json()
                    assert [w["target"] for w in windows] == [hot]
                    await wait_ticks(sim, sim.daemon.loop.ticks + 2)  # type: ignore[union-attr]
                    plan = sim.daemon.current_plan()
                    assert plan is not None
                    # left alone by the policies; the Guard's safety rules still apply
                    assert {
                        a.reason for a in plan.assignments if a.device_id == hot
                    } <= SAFETY_REASONS

                    ended = await api.delete(f"/v1/maintenance/{hot}")
                    assert ended.status_code == 200, ended.text
                    silence = (await am.get(f"/api/v2/silence/{silence_id}")).json()
                    assert silence["status"]["state"] == "expired"
                    audit = (await api.get("/v1/audit")).json()["items"]
                    assert [r["method"] for r in audit if "/v1/maintenance" in r["path"]] == [
                        "DELETE",
                        "PUT",
                    ]
