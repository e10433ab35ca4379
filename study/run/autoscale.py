"""Studies on clusters that add nodes on demand, and a deadline for trials that never start.

``resources.autoscaling = true`` (KubeRay with a GPU worker group from 0 replicas, ``ray up`` with worker types):
the launch check accepts a request no live node can host and asks the autoscaler for it
(:func:`request_from_autoscaler`, ``ray.autoscaler.sdk.request_resources``), and withdraws the request when the
study ends, fails or is interrupted (:func:`autoscaler_request_released`). On any cluster,
:class:`PendingWatchdog` ends a study whose trials stay PENDING for ``resources.pending_timeout`` seconds with a
message naming the missing resource, instead of Ray waiting for ever (issue 12).
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, Iterator, Sequence

from ray.tune import Callback
from ray.tune.stopper import Stopper

from study.config.resources import PendingTimeout

__all__ = ["request_from_autoscaler", "release_autoscaler_request", "autoscaler_request_released",
           "PendingWatchdog", "raise_if_pending_timeout"]


_REQUESTED: list[dict[str, float]] = []  # the bundle this driver asked the autoscaler for, until it is released


def request_from_autoscaler(*, cpu: float, gpu: float, trials: int) -> dict[str, float]:
    """Ask the cluster's autoscaler for room for ``trials`` trials at once (``ray.autoscaler.sdk.request_resources``:
    it scales up to fit the bundles and keeps them until the next request; a cluster without an autoscaler ignores
    it). Returns the bundle asked for. The request outlives the driver unless it is withdrawn, so the GPU nodes of
    a long-lived cluster (a RayCluster, `ray up`) would stay up after the study: the driver's Ray session releases
    it (:func:`autoscaler_request_released`, around everything the study does)."""
    from ray.autoscaler.sdk import request_resources

    bundle = {"CPU": float(cpu), **({"GPU": float(gpu)} if gpu else {})}
    request_resources(bundles=[dict(bundle) for _ in range(max(1, trials))])
    _REQUESTED[:] = [bundle]
    return bundle


def release_autoscaler_request() -> bool:
    """Withdraw this driver's request (an empty one replaces it: Ray keeps only the latest), so that the
    autoscaler may remove the nodes it added once they idle. Returns whether there was one. A failure (the
    cluster already gone) is reported on stderr, never raised: it must not hide why the study ended."""
    if not _REQUESTED:
        return False
    bundle = _REQUESTED.pop()
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[])
    except Exception as err:  # noqa: BLE001 - reported; the study's own outcome (or exception) goes on
        print(f"warning: could not withdraw the autoscaler request for {bundle} ({type(err).__name__}: {err}); "
              "it stays until the next request on this cluster (`ray status` shows it)", file=sys.stderr)
    return True


@contextlib.contextmanager
def autoscaler_request_released() -> Iterator[None]:
    """A scope (the driver's connection to Ray) at whose end, however it ends (the study done, an exception,
    Ctrl-C), a request made inside it is withdrawn; only SIGKILL skips it."""
    try:
        yield
    finally:
        release_autoscaler_request()


def _missing(request: dict[str, float], nodes: Sequence[dict[str, Any]]) -> list[str]:
    """The resources of ``request`` no alive node has enough of (GPU before CPU: the usual culprit)."""
    out = []
    for name in sorted(request, key=lambda k: (k != "GPU", k)):
        need = request[name]
        if need > 0 and not any(float(n.get("Resources", {}).get(name, 0)) >= need for n in nodes if n.get("Alive")):
            out.append(name)
    return out


_TIMED_OUT: list[str] = []  # set in the driver process by the watchdog Ray restored or we built (never pickled)


def raise_if_pending_timeout() -> None:
    """After ``fit``: raise :class:`PendingTimeout` if the watchdog ended the study (and forget it)."""
    if _TIMED_OUT:
        message = _TIMED_OUT.pop()
        _TIMED_OUT.clear()
        raise PendingTimeout(message)


class PendingWatchdog:
    """Ends a study whose trials cannot start: a Tune callback timing how long trials stay PENDING while none
    runs; :meth:`stopper` stops the experiment once that passes ``timeout_s`` (``resources.pending_timeout``).

    Without it Ray keeps an infeasible trial PENDING for ever and only logs warnings (issue 12, item 2). The clock
    runs only while no trial is RUNNING: trials queued behind running ones (more concurrent trials than slots) are
    progress, not a hang. The message names the missing resource, and the callback raises :class:`PendingTimeout`
    with it out of Ray's loop. The waiting trials stay PENDING in Ray's saved state (and RUNNING in Optuna's), so
    that `dastudy study resume`, once the resource exists, runs them; when the study was instead ended with Ray's
    stop-all, Ray recorded them TERMINATED without a result and a resume never ran them.
    """

    def __init__(self, *, timeout_s: float, request: dict[str, float], clock: Callable[[], float] = time.monotonic):
        self.timeout_s = float(timeout_s)
        self.request = dict(request)
        self.clock = clock
        self.since: float | None = None
        self.message: str | None = None

    def __getstate__(self) -> dict:  # a restored study starts a fresh clock
        return {"timeout_s": self.timeout_s, "request": self.request}

    def __setstate__(self, state: dict) -> None:
        self.__init__(timeout_s=state["timeout_s"], request=state["request"])

    def observe(self, statuses: Sequence[str], pending_name: str = "") -> None:
        """Called at every step of the Tune loop with the trial statuses."""
        if self.message is not None:
            return
        if "RUNNING" in statuses or "PENDING" not in statuses:
            self.since = None
            return
        now = self.clock()
        if self.since is None:
            self.since = now
        elif now - self.since >= self.timeout_s:
            missing = self.missing()
            if not missing:
                # Some node has what the trial needs: it waits its turn (Ray still starting a worker on a busy
                # machine, or other jobs holding the resources), which is not a study that cannot start. (CI: a
                # resumed study with a 3 s deadline ended "no node provides CPU / GPU" on a cluster that had both.)
                self.since = now
                return
            self.message = self.describe(now - self.since, pending_name, missing)
            _TIMED_OUT[:] = [self.message]

    def missing(self) -> list[str]:
        """The requested resources no alive node of the cluster has enough of (now)."""
        import ray

        return _missing(self.request, ray.nodes())

    def describe(self, waited: float, pending_name: str, missing: Sequence[str]) -> str:
        import ray

        wanted = ", ".join(f"{k} = {v:g}" for k, v in self.request.items())
        totals = ray.cluster_resources()
        have = ", ".join(f"{totals.get(k, 0):g} {k}" for k in self.request)
        return (f"no trial could start for {waited:.0f} s (resources.pending_timeout = {self.timeout_s:g}): "
                f"{pending_name or 'the next trial'} needs {wanted} and no node provides {' / '.join(missing)} "
                f"(cluster now: {have}; an autoscaler, if any, added no such node). Lower the request, add nodes "
                f"with {' / '.join(missing)}, or check the autoscaler (`ray status`); then `dastudy study resume`")

    def callback(self):
        return _WatchCallback(self)

    def stopper(self):
        return _WatchStopper(self)


class _WatchCallback(Callback):
    def __init__(self, watchdog: PendingWatchdog):
        self.watchdog = watchdog

    def on_step_end(self, iteration, trials, **info):
        pending = next((t for t in trials if t.status == "PENDING"), None)
        self.watchdog.observe([t.status for t in trials], f"trial_{pending.trial_id}" if pending else "")
        if self.watchdog.message is not None:
            _TIMED_OUT.clear()
            # Out of Ray's loop (tune.run cleans up and re-raises): the trials stay PENDING in the saved state.
            raise PendingTimeout(self.watchdog.message)


class _WatchStopper(Stopper):
    def __init__(self, watchdog: PendingWatchdog):
        self.watchdog = watchdog

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return self.watchdog.message is not None
