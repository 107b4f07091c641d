"""The Braiins OS public gRPC API of a simulated miner, served over real HTTP/2 (grpclib server).

Behaviour modelled on the firmware (braiins.bos.v1, see
drivers/asic/bos_messages.py for the facts and their sources):

- ``Login`` checks user and password (UNAUTHENTICATED "Bad credentials"
  otherwise), returns the token in the ``authorization`` response header and
  in ``LoginResponse.token`` with ``timeout_s``; every other call needs that
  header (UNAUTHENTICATED "Missing or invalid authentication token").  A token
  lapses ``token_timeout_seconds`` after its last use.
- ``PauseMining`` / ``ResumeMining`` answer at once (``already_paused`` /
  ``already_mining``) but the miner only reaches the state
  ``pause_delay_seconds`` / ``resume_delay_seconds`` later (hashboards ramp),
  so ``GetMinerDetails.status`` still shows the old state in between: a
  client must read back.
- ``SetPowerTarget`` outside the model's range is refused with
  INVALID_ARGUMENT and the firmware's wording ("power target [0W] is not in
  allowed range [Some(1700), Some(6500)]"); ``SAVE`` only stores it,
  ``SAVE_AND_APPLY`` (and ``..._FORCE_APPLY``) puts it in force: the
  tuner's ``current_target`` shows it at once and the power follows; the
  tuner reports TUNING for ``tune_seconds``.
- ``Reboot`` answers, then the miner restarts at once (its uptime, the
  cgminer API's ``Elapsed``, starts again from 0).
- ``hang`` makes every call accept the stream and never answer;
  ``token_in_body = False`` plays firmware before API 1.1.0 (an empty
  LoginResponse: the token is only in the header).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from drivers.asic import bos_messages as bos
from drivers.sim import boser
from drivers.sim.braiins_web import SimBraiinsWeb
from drivers.sim.miner import SimMiner, SimServer
from scheduler.core.model import Device, Pool

# Power target range per model (default, min, max in W).  S19k Pro: read from a
# real miner's ConfigurationService constraints; others: shares of nominal power.
POWER_RANGES_W: Mapping[str, tuple[int, int, int]] = {"S19k Pro": (2760, 771, 6435)}
MIN_SHARE, MAX_SHARE = 0.3, 1.9

BAD_CREDENTIALS = "Bad credentials"
BAD_TOKEN = "Missing or invalid authentication token"


class SimBraiinsGrpc:
    """One miner's braiins.bos.v1 API: tokens, pause/resume with delay, power targets."""

    def __init__(
        self,
        miner: SimMiner,
        *,
        port: int = 0,
        username: str = "root",
        password: str = "root",
        token_timeout_seconds: float = 3600.0,
        pause_delay_seconds: float = 2.0,
        resume_delay_seconds: float = 2.0,
        tune_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        web_port: int | None = None,
    ) -> None:
        self.miner = miner
        self.locate = False
        self.web: SimBraiinsWeb | None = None
        """The web interface (page and GraphQL) on ``web_port`` (0 = free), if asked for."""
        self.username = username
        self.password = password
        self.token_timeout_seconds = token_timeout_seconds
        self.pause_delay_seconds = pause_delay_seconds
        self.resume_delay_seconds = resume_delay_seconds
        self.tune_seconds = tune_seconds
        self.hang = False
        self.token_in_body = True  # False: firmware before API 1.1.0 (token in the header only)
        self.calls: Counter[str] = Counter()
        self._clock = clock
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._bound_port = 0
        self._server: Server | None = None
        self._tokens: dict[str, float] = {}  # token -> last use
        self._paused_wanted = miner.asleep
        self._pending: asyncio.TimerHandle | None = None
        nominal = round(miner.device.nominal_power_w)
        self.power_range_w = POWER_RANGES_W.get(
            miner.device.model, (nominal, round(MIN_SHARE * nominal), round(MAX_SHARE * nominal))
        )
        self.target_w = self.power_range_w[0]
        self.saved_target_w = self.target_w
        self._tuned_at = clock() - tune_seconds
        miner.set_power_level(self.target_w / miner.device.nominal_power_w)
        if web_port is not None:
            self.web = SimBraiinsWeb(
                miner,
                port=web_port,
                username=username,
                password=password,
                power_target_w=lambda: self.target_w,
                power_range_w=self.power_range_w,
                locate=lambda: self.locate,
            )

    @property
    def port(self) -> int:
        """The bound port (the requested one before the first start)."""
        return self._bound_port or self._requested_port

    async def start(self) -> None:
        """Listen on the miner's address (idempotent)."""
        if self._server is not None:
            return
        # proto IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP; with proto 0 the headers-then-data writes of a reply wait out a
        # delayed ACK (40 ms per call).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.miner.address, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._bound_port = int(sock.getsockname()[1])
        self._server = Server([self], codec=bos.BosCodec())
        await self._server.start(sock=sock)
        if self.web is not None:
            await self.web.start()

    async def stop(self) -> None:
        """Stop listening and cancel calls in progress (hung ones included)."""
        server, self._server = self._server, None
        if self.web is not None:
            await self.web.stop()
        if self._pending is not None:
            self._pending.cancel()
        if server is not None:
            server.close()
            await server.wait_closed()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def __aenter__(self) -> SimBraiinsGrpc:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def __mapping__(self) -> dict[str, Handler]:
        """The routing table grpclib asks for: one handler per method path."""
        handlers: dict[bos.Method, Callable[[Any], Any]] = {
            bos.LOGIN: self._issue,
            bos.PAUSE: self._pause,
            bos.RESUME: self._resume,
            bos.SET_POWER_TARGET: self._set_power_target,
            bos.GET_TUNER_STATE: self._tuner_state,
            bos.GET_MINER_DETAILS_FULL: self._details,
            bos.GET_CONSTRAINTS: self._constraints,
            bos.GET_MINER_STATS: lambda _r: boser.miner_stats(self.miner, self._now()),
            bos.GET_HASHBOARDS: lambda _r: boser.hashboards(self.miner, self._now()),
            bos.GET_COOLING_STATE: lambda _r: boser.cooling(self.miner, self._now()),
            bos.GET_POOL_GROUPS: lambda _r: boser.pool_groups(self.miner),
            bos.GET_LOCATE: lambda _r: bos.LocateDeviceStatus(self.locate),
            bos.SET_LOCATE: self._set_locate,
            bos.REBOOT: self._reboot,
            bos.GET_PERFORMANCE_MODE: self._performance_mode,
            bos.GET_MINER_CONFIGURATION: lambda _r: boser.configuration(self.miner, self.target_w),
        }
        return {
            method.path: Handler(
                self._serving(method, handler),
                Cardinality.UNARY_UNARY,
                method.request,
                method.reply,
            )
            for method, handler in handlers.items()
        }

    def _serving(
        self, method: bos.Method, handler: Callable[[Any], Any]
    ) -> Callable[[Stream[Any, Any]], Any]:
        async def serve(stream: Stream[Any, Any]) -> None:
            self.calls[method.name] += 1
            request = await stream.recv_message()
            if self.hang:
                await asyncio.Event().wait()  # never answers; stop() cancels it
            if method is bos.LOGIN:
                token = handler(request)
                await stream.send_initial_metadata(metadata={"authorization": token})
                reply = bos.LoginResponse(token, int(self.token_timeout_seconds))
                await stream.send_message(reply if self.token_in_body else bos.LoginResponse())
                return
            self._authorize(stream.metadata or {})
            await stream.send_message(handler(request))

        return serve

    # ---- authentication --------------------------------------------------------------------

    def _issue(self, request: bos.LoginRequest) -> str:
        user_ok = secrets.compare_digest(request.username.encode(), self.username.encode())
        password_ok = secrets.compare_digest(request.password.encode(), self.password.encode())
        if not (user_ok and password_ok):
            raise GRPCError(Status.UNAUTHENTICATED, BAD_CREDENTIALS)
        token = secrets.token_urlsafe(12)
        self._tokens[token] = self._clock()
        return token

    def _authorize(self, metadata: Mapping[str, Any]) -> None:
        token = metadata.get("authorization")
        now = self._clock()
        used = self._tokens.get(token) if isinstance(token, str) else None
        if used is None or now - used >= self.token_timeout_seconds:
            self._tokens.pop(str(token), None)
            raise GRPCError(Status.UNAUTHENTICATED, BAD_TOKEN)
        self._tokens[str(token)] = now  # validity slides with each request

    def expire_tokens(self) -> None:
        """Forget every token (as a firmware restart would)."""
        self._tokens.clear()

    # ---- actions ---------------------------------------------------------------------------

    def _later(self, delay: float, paused: bool) -> None:
        if self._pending is not None:
            self._pending.cancel()
        loop = asyncio.get_running_loop()
        self._pending = loop.call_later(delay, self.miner.set_asleep, paused)

    def _pause(self, _request: bos.Empty) -> bos.PauseMiningResponse:
        already = self._paused_wanted
        if not already:
            self._paused_wanted = True
            self._later(self.pause_delay_seconds, True)
        return bos.PauseMiningResponse(already_paused=already)

    def _resume(self, _request: bos.Empty) -> bos.ResumeMiningResponse:
        already = not self._paused_wanted
        if not already:
            self._paused_wanted = False
            self._later(self.resume_delay_seconds, False)
        return bos.ResumeMiningResponse(already_mining=already)

    def _set_power_target(self, request: bos.SetPowerTargetRequest) -> bos.SetPowerTargetResponse:
        watts = request.power_target.watt if request.power_target is not None else 0
        _default, low, high = self.power_range_w
        if not low <= watts <= high:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"power target [{watts}W] is not in allowed range [Some({low}), Some({high})]",
            )
        self.saved_target_w = watts
        if request.save_action in (
            bos.SaveAction.SAVE_AND_APPLY,
            bos.SaveAction.SAVE_AND_FORCE_APPLY,
        ):
            self.target_w = watts
            self._tuned_at = self._clock()
            self.miner.set_power_level(watts / self.miner.device.nominal_power_w)
        return bos.SetPowerTargetResponse(bos.Power(watts))

    # ---- reads -----------------------------------------------------------------------------

    def status(self) -> bos.MinerStatus:
        """What GetMinerDetails reports now (follows the miner, not the last request)."""
        return bos.MinerStatus.PAUSED if self.miner.asleep else bos.MinerStatus.NORMAL

    def _now(self) -> float:
        return self.miner.physics.now(None)

    def _details(self, _request: bos.Empty) -> bos.MinerDetails:
        return boser.details(self.miner, self.status())

    def _reboot(self, _request: bos.Empty) -> bos.Empty:
        self.miner.reboot()  # answers, then restarts: uptime from 0
        return bos.Empty()

    def _set_locate(self, request: bos.SetLocateDeviceStatusRequest) -> bos.LocateDeviceStatus:
        self.locate = bool(request.enable)
        return bos.LocateDeviceStatus(self.locate)

    def _performance_mode(self, _request: bos.Empty) -> bos.PerformanceMode:
        target = bos.PowerTargetMode(bos.Power(self.target_w))
        return bos.PerformanceMode(bos.TunerPerformanceMode(target))

    def _tuner_state(self, _request: bos.Empty) -> bos.GetTunerStateResponse:
        tuning = self._clock() - self._tuned_at < self.tune_seconds
        state = bos.TunerState.TUNING if tuning else bos.TunerState.STABLE
        mode = bos.PowerTargetModeState(current_target=bos.Power(self.target_w))
        return bos.GetTunerStateResponse(state, mode)

    def _constraints(self, _request: bos.Empty) -> bos.GetConstraintsResponse:
        default, low, high = self.power_range_w
        power = bos.PowerConstraints(bos.Power(default), bos.Power(low), bos.Power(high))
        return bos.GetConstraintsResponse(bos.TunerConstraints(power))


def simulate(
    device: Device, pools: Sequence[Pool], *, companion_port: int = 0, **kwargs: Any
) -> tuple[SimMiner, SimServer | None]:
    """Braiins OS: the cgminer-compatible API reads, the gRPC API on ``companion_port`` commands."""
    miner = SimMiner(device, pools, **kwargs)
    boser.play_boser(miner)
    grpc = SimBraiinsGrpc(miner, port=companion_port, clock=kwargs.get("clock", time.monotonic))
    return miner, grpc
