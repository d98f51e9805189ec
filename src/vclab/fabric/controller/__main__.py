"""`python -m vclab.fabric.controller --fabric FILE --port 6653 --log FILE`: the fabric controller.

os-ken ships no manager script, so this is ours: patch the hub, hand os-ken its listen
address through its own config object (127.0.0.1 only), and run the app until signalled.
Exit status 2: the fabric file is wrong (the message names the field).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vclab.fabric.controller", description=__doc__)
    parser.add_argument("--fabric", required=True, help="fabric JSON written by the build")
    parser.add_argument("--port", type=int, default=6653, help="OpenFlow TCP port on 127.0.0.1")
    parser.add_argument("--log", required=True, help="log file, kept with the run")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(filename=args.log, level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    import warnings
    warnings.filterwarnings("ignore", module="eventlet")  # its deprecation notice, every start

    # os-ken 4.2 runs on native threads unless OSKEN_HUB_TYPE=eventlet; patch() is a no-op
    # for the former and the monkey-patching the latter needs, so call it either way.
    from os_ken.lib import hub
    hub.patch(thread=False)
    # app_manager first: importing os_ken.controller.controller first is a circular import.
    from os_ken.base import app_manager
    from os_ken import cfg
    import os_ken.controller.controller  # noqa: F401  (registers the ofp-* options)

    from vclab.fabric.controller import app as fabric_app  # noqa: F401  (registers --vclab-fabric)
    from vclab.fabric.controller.model import load
    from vclab.errors import ConfigError

    try:
        load(args.fabric)  # fail here, readably, rather than inside os-ken's app loader
    except (ConfigError, OSError, ValueError) as exc:
        print(f"vclab controller: {exc}", file=sys.stderr)
        return 2
    cfg.CONF(args=["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(args.port),
                   "--vclab-fabric", args.fabric],
             project="os_ken", default_config_files=[])
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    signal.signal(signal.SIGUSR1, _prepare)
    logging.getLogger("vclab.controller").info("listening on 127.0.0.1:%d", args.port)
    app_manager.AppManager.run_apps(["vclab.fabric.controller.app", "os_ken.controller.ofp_handler"])
    return 0


def _reload(signum: int, _frame: object) -> None:
    """SIGHUP from the build after it rewrote the fabric file (a VM is moving). The reload
    itself runs in the app's event loop, in turn with the OpenFlow events: a signal handler
    runs between any two bytecodes of whatever the main thread does, and the queue put may
    wait, so a thread of its own hands the event over."""
    from vclab.fabric.controller import app

    _hand_over(app.EventReload, "reload")


def _prepare(signum: int, _frame: object) -> None:
    """SIGUSR1 from vclab when a vMotion starts its pre-copy (fabric.next.json written)."""
    from vclab.fabric.controller import app

    _hand_over(app.EventPrepare, "prepare")


def _hand_over(event_class: type, name: str, wait_s: float = 30.0) -> None:
    """Give the app `event_class()` from a thread of its own, once the app can take it. The
    app writes its 'started' event (vclab's cue to signal it) in its constructor, before
    os-ken registers it: a SIGHUP in between found no app and was dropped, and the VM's move
    waited for a generation that never came (chaos test, seed 167464: a migration met a
    controller restart). Its event queue exists from the constructor on, so an event handed
    over before its loop runs is handled when it does."""
    import threading
    import time

    from os_ken.base import app_manager

    def deliver() -> None:
        deadline = time.monotonic() + wait_s
        while (inst := app_manager.lookup_service_brick("FabricController")) is None:
            if time.monotonic() > deadline:
                logging.getLogger("vclab.controller").error("%s: the app never came up", name)
                return
            time.sleep(0.005)
        inst.send_event(inst.name, event_class())

    threading.Thread(target=deliver, daemon=True, name=name).start()


def _stop(signum: int, _frame: object) -> None:
    """SIGTERM from vclab's ProcessTracker. os-ken's native-thread hub cannot unwind its
    threads (run_apps' cleanup calls a kill() they lack), so flush the log and leave at once;
    the switches keep their rules (fail_mode=secure) and keep forwarding."""
    logging.getLogger("vclab.controller").info("stopped by signal %d", signum)
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
