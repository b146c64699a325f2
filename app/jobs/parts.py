"""Jobs: the parts of the batch jobs one gateway process opened (wiring.py opens them; the Gateway holds them
and the batch routes use them)."""

from __future__ import annotations

from dataclasses import dataclass

from ..storage.base import Storage
from .batches import Batches
from .files import FileStore
from .records import Records
from .tasks import Tasks
from .worker import JobQueue


@dataclass(slots=True)
class Jobs:
    storage: Storage
    records: Records
    files: FileStore
    batches: Batches
    queue: JobQueue
    tasks: Tasks
