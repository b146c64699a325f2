"""The supervisor of `embedding-gateway serve --workers N`: uvicorn's, except for SIGHUP.

uvicorn answers SIGHUP by replacing every worker, which would drop their caches (and reload the local
model in each). Here SIGHUP is passed on to the workers instead: each reloads its teams from the config
file in place (app/teams/reload.py). A worker that dies is still replaced, as uvicorn does.
"""

from __future__ import annotations

import logging
import os
import signal

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

log = logging.getLogger("uvicorn.error")


class Supervisor(Multiprocess):
    def handle_hup(self) -> None:
        log.info("Received SIGHUP, passed on to the workers (they reload their teams).")
        for process in self.processes:
            if process.pid is not None and process.process.is_alive():
                os.kill(process.pid, signal.SIGHUP)


def supervise(config: uvicorn.Config) -> None:
    """What uvicorn.run does with workers > 1, with this supervisor."""
    Supervisor(config, sockets=[config.bind_socket()]).run()
