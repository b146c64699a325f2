"""Shapes of the Files and Batch APIs that one client could use against the process, each tried on a real
gateway (auth on, hot cache on, Redis, local storage) with the default job settings:

- a small input file whose lines each ask for 2,048 vectors: a batch's chunk holds its answers until it is
  written, so a chunk is cut at one request's worth of items and vectors, not only at its lines and bytes
  (the gateway's peak resident memory, VmHWM, reset before the batch);
- hundreds of downloads of a large file (GET /v1/files/{id}/content) that are never read: each holds up to
  two chunks of it, so they take that from the memory budget (a gateway with a small budget, so that a few
  hundred fill it) and the rest wait, then get 503, rather than growing the process;
- downloads that are never read hold their share of the budget until the write deadline aborts them,
  not for ever: then the budget serves others (a gateway with a 2 s write deadline);
- a small input file whose output is far larger (2,048 vectors a line): a team's stored bytes are capped
  (`jobs.team_max_bytes`), outputs included, so the batch stops at the cap with its output so far kept,
  and the count comes back whole when the files are deleted; a DashScope task's fetched input, likewise,
  and its lines are capped as an uploaded file's (`jobs.max_lines`);
- batches created by the hundred from one small file, and empty files uploaded by the hundred (200 a
  second from one client): each is a record in the shared Redis and a job in the one queue every team's
  batches wait in, so a team's unfinished batches (`jobs.team_max_batches`) and its files
  (`jobs.team_max_files`, the outputs its unfinished batches will write counted) are capped;
- every batch: each chunk writes an output part and an error part, the empty ones too, and a kind with
  no line makes no file, so its parts were never deleted (an empty object per chunk of every batch, for
  ever): they are deleted when the batch finishes; and a local folder emptied by a delete goes too (a
  folder per file and per batch was left);
- uploads cut off midway (the client gone with 1 of 3.5 MB sent, three times over, for a team of a 4 MB
  cap): each gives back the bytes it held of the team's cap and leaves no partial file in storage;
- an upload whose form has thousands of fields (each kept by name: 800,000 empty ones, 45 MB, held 88 MB
  and took 14 s to parse) is refused past a few parts;
- with media fetching on, batch lines each naming 21 images: a line's fetched images come from the memory
  budget, as a request's do, and a line that fetched media ends its chunk, so a chunk holds one line's
  images at most, not 500 lines' (a gateway of its own, media fetching on for an image origin on loopback);
- a gateway killed during an upload: its half-written file was never swept (the next gateway's first
  files sweep now deletes such a file once it is an hour old);
- three downloads of a task's 40 MB result: gzipped on the event loop, /healthz waited p50 62 ms, p90
  145 ms meanwhile (in a thread at zlib's level 1: 3.4 and 9.2 ms).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from app.flights.batcher import FLOAT_CALL_VALUES
from bench.imageserver import JPEG_BYTES, ImageServer
from tests.support.memory import PeakGrowth
from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory, StandIn, stop
from tests.support.teamkit import DS_TEXT, jobs_gateway

MB = 1024 * 1024
FINISHED = ("completed", "failed", "cancelled")
WIDE = "text-embedding-3-small"  # the stand-in's OpenAI route: 2,048 items per upstream call


@pytest.fixture(scope="module")
def gw(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str, Path]]:
    with jobs_gateway(gateways, tmp_path_factory.mktemp("hostile-jobs"), {"alpha": {}}) as j:
        yield j.gw, j.keys["alpha"], j.files


@pytest.fixture(scope="module")
def tight(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    """A gateway whose memory budget 300 stalled downloads would pass 9 times over (16 MiB: 32 downloads of
    two 256 KiB chunks), waiting 1 s for it (not 5: the test's time). Its teams may transfer 1,000 at once:
    the budget's bound is tested here, the transfer desks' (8 by default) at the end of this file."""
    env = {"MEMORY_BUDGET_BYTES": str(16 * MB), "MEMORY_WAIT_S": "1", "TRANSFER_CONCURRENCY": "1000"}
    with jobs_gateway(gateways, tmp_path_factory.mktemp("hostile-tight"), {"alpha": {}}, env=env) as j:
        yield j.gw, j.keys["alpha"]


@pytest.fixture(scope="module")
def capped(
    gateways: GatewayFactory, served: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, dict[str, str], Path]]:
    """A gateway whose teams may store 4 MB of files (the default is 10 GiB: a test would fill its disk), in 8
    files at most, with 3 batches unfinished at most, files of 5,000 lines at most (the defaults: 10,000, 100
    and 50,000)."""
    jobs = {"team_max_bytes": 4 * MB, "team_max_files": 8, "team_max_batches": 3, "max_lines": 5000}
    names = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta")
    teams: dict[str, dict[str, Any]] = {name: {} for name in names}
    tmp = tmp_path_factory.mktemp("hostile-capped")
    with jobs_gateway(gateways, tmp, teams, jobs=jobs, media_fetch_allow_hosts=[served[0]]) as j:
        yield j.gw, j.keys, j.files


def healthz_while(g: Gateway, busy: Callable[[], bool], what: str) -> list[float]:
    """The times of a probe's /healthz, one every 10 ms while `busy()`, sorted (printed: p50, p90, max)."""
    took: list[float] = []
    with httpx.Client(base_url=g.url, timeout=30) as probe:
        while busy():
            t0 = time.monotonic()
            probe.get("/healthz").raise_for_status()
            took.append(time.monotonic() - t0)
            time.sleep(0.01)
    took.sort()
    if took:
        p50, p90, top = (took[i] * 1000 for i in (len(took) // 2, int(len(took) * 0.9), -1))
        print(f"/healthz during {what}: {len(took)} probes, p50 {p50:.1f} ms, p90 {p90:.1f} ms, max {top:.1f} ms")
    return took


def files_in(root: Path) -> list[Path]:
    """The files under `root`, by os.walk: the gateway removes folders as their last file goes, and Path.rglob
    raises on a folder that went between its listing and its scan."""
    return [Path(folder, name) for folder, _, names in os.walk(root) for name in names]


def part_files(root: Path) -> list[Path]:
    return [p for p in files_in(root) if p.name.endswith(".part")]


def client(g: Gateway, key: str) -> OpenAI:
    return OpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0, timeout=120)


def finished(c: OpenAI, bid: str, within: float = 120) -> Any:
    def done() -> Any:
        b = c.batches.retrieve(bid)
        assert b.status in FINISHED, b.status
        return b

    return eventually(done, within=within, interval=0.2, what=f"batch {bid} finished")


def test_lines_of_2048_items_each_are_not_held_500_lines_at_a_time(gw: tuple[Gateway, str, Path]) -> None:
    """40 lines of the same 2,048 short texts at 256 dimensions: a 1.2 MB file, 81,920 vectors. Cut at 500
    lines (or 8 MB of input) alone, the whole file was one chunk and the gateway's peak memory rose by
    ~570 MB (its answers as JSON text, the items, the vectors); cut at one request's worth (one line here)
    it rose by ~45 MB."""
    g, key, _ = gw
    c = client(g, key)
    salt = uuid.uuid4().hex[:8]
    body = {"model": WIDE, "input": [f"{salt} {j}" for j in range(2048)], "dimensions": 256}
    lines = [orjson.dumps({"custom_id": f"w{i}", "method": "POST", "url": "/v1/embeddings", "body": body})
             for i in range(40)]  # fmt: skip
    f = c.files.create(file=("wide.jsonl", b"\n".join(lines)), purpose="batch")
    peak = PeakGrowth(g.proc.pid)
    b = finished(c, c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id)
    grown_mb = peak.mb()
    assert b.status == "completed" and b.request_counts.completed == 40, b  # type: ignore[union-attr]
    first = orjson.loads(c.files.content(b.output_file_id).content.split(b"\n", 1)[0])  # type: ignore[arg-type]
    assert len(first["response"]["body"]["data"]) == 2048
    assert grown_mb < 200, f"the batch raised the gateway's peak memory by {grown_mb:.0f} MB"


@pytest.fixture(scope="module")
def stalling(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    """A gateway whose memory budget holds 4 downloads (2 MiB), and whose readers have 2 s (not 20) to take
    an answer's bytes: the test's time."""
    env = {"MEMORY_BUDGET_BYTES": str(2 * MB), "MEMORY_WAIT_S": "20", "HTTP_WRITE_TIMEOUT_S": "2"}
    with jobs_gateway(gateways, tmp_path_factory.mktemp("hostile-stalling"), {"alpha": {}}, env=env) as j:
        yield j.gw, j.keys["alpha"]


def stalled_download(g: Gateway, key: str | None, file_id: str | None = None, path: str = "") -> socket.socket:
    """A download of `file_id` (or of `path`) asked for on a socket whose buffer is 4 KiB and which reads
    nothing more."""
    host, port = g.url.removeprefix("http://").split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect((host, int(port)))
    path = path or f"/v1/files/{file_id}/content"
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    return s


def task_outcome(g: Gateway, key: str, body: dict[str, Any], within: float) -> dict[str, Any]:
    """A DashScope async text-embedding task made of `body`, polled until it ended: its output."""
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    with httpx.Client(base_url=g.url, headers=headers, timeout=30) as http:
        tid = http.post(DS_TEXT, json=body).raise_for_status().json()["output"]["task_id"]

        def ended() -> dict[str, Any]:
            out: dict[str, Any] = http.get(f"/api/v1/tasks/{tid}").raise_for_status().json()["output"]
            assert out["task_status"] in ("SUCCEEDED", "FAILED", "CANCELED"), out
            return out

        outcome: dict[str, Any] = eventually(ended, within=within, interval=0.2, what=f"task {tid} ended")
        return outcome


def status_of(reader: socket.socket) -> bytes:
    """The status code of the answer on `reader`, reading its status line's first 12 bytes only."""
    head = b""
    while len(head) < 12 and (more := reader.recv(12 - len(head))):
        head += more
    return head[9:12]


def test_downloads_never_read_are_held_within_the_memory_budget(tight: tuple[Gateway, str]) -> None:
    """300 downloads of a 16 MB file, none read past its status line (each reader's socket buffer 4 KiB).
    Unbudgeted, each held about 0.6 MB of the gateway (the chunk in the transport's buffer and the next one
    read): its peak memory rose by ~180 MB. Budgeted, 32 were answered (16 MiB) and the others got 503 after
    the wait; the peak rose by ~25 MB. Now one team's share of the budget (a quarter) holds 8, and the others
    get 429 after the wait."""
    g, key = tight
    c = client(g, key)
    f = c.files.create(file=("big.jsonl", (b"x" * 1023 + b"\n") * (16 * 1024)), purpose="batch")
    peak = PeakGrowth(g.proc.pid)
    readers: list[socket.socket] = []
    try:
        for _ in range(300):
            readers.append(stalled_download(g, key, f.id))
        statuses = [status_of(s) for s in readers]  # b"200" or b"429" (after the wait for the team's share)
        grown_mb = peak.mb()
    finally:
        for s in readers:
            s.close()
    served, refused = statuses.count(b"200"), statuses.count(b"429")
    assert served + refused == len(readers), statuses
    assert served <= 8 and refused >= len(readers) - 8, (served, refused)
    assert grown_mb < 80, f"{served} stalled downloads raised the gateway's peak memory by {grown_mb:.0f} MB"
    assert c.files.content(f.id).content.count(b"\n") == 16 * 1024  # once they are gone, a download is whole


def test_a_batch_s_output_counts_in_its_team_s_stored_bytes(capped: tuple[Gateway, dict[str, str], Path]) -> None:
    """12 lines of the same 2,048 texts at 64 dimensions: a 0.3 MB file whose output is ~18 MB (1.5 MB a
    line, each line a chunk). The output was written whole and counted only once finished: the team then
    held 18 MB against its 4 MB cap. Now each part is counted before it is written: the batch stops at the
    cap (cancelled, saying why), its output so far within the cap and kept; deleting the files gives it all
    back (a file of nearly the cap uploads again)."""
    g, keys, _ = capped
    c = client(g, keys["alpha"])
    salt = uuid.uuid4().hex[:8]
    body = {"model": WIDE, "input": [f"{salt} {j}" for j in range(2048)], "dimensions": 64}
    lines = [orjson.dumps({"custom_id": f"w{i}", "method": "POST", "url": "/v1/embeddings", "body": body})
             for i in range(12)]  # fmt: skip
    f = c.files.create(file=("wide.jsonl", b"\n".join(lines)), purpose="batch")
    b = finished(c, c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id)
    files = [x for x in (f.id, b.output_file_id, b.error_file_id) if x]
    stored = sum(c.files.retrieve(x).bytes for x in files)
    assert stored <= 4 * MB, f"the team stores {stored / MB:.1f} MB against its 4 MB cap ({b.status})"
    assert b.status == "cancelled" and b.errors and b.errors.data, b  # type: ignore[union-attr]
    assert b.errors.data[0].code == "storage_full", b.errors  # type: ignore[union-attr]
    done = b.request_counts.completed  # type: ignore[union-attr]
    assert 1 <= done < 12 and c.files.content(b.output_file_id).content.count(b"\n") == done  # type: ignore[arg-type]
    for x in files:
        c.files.delete(x)
    c.files.create(file=("full.jsonl", (b" " * 1023 + b"\n") * (4 * 1024 - 64)), purpose="batch")  # 4 MB - 64 KiB


def test_a_task_s_fetched_input_counts_in_its_team_s_stored_bytes(
    capped: tuple[Gateway, dict[str, str], Path], served: tuple[str, Path]
) -> None:
    """Team beta holds 3.5 MB of its 4 MB; a task names a 0.6 MB text file. Its input was stored and counted
    without a look at the cap (the task ran: beta then held 4.1 MB and more with its result); now the task
    fails saying why, and nothing of it stays counted (a file of nearly the cap uploads once the first is
    deleted)."""
    g, keys, _ = capped
    c = client(g, keys["beta"])
    filler = c.files.create(file=("filler.jsonl", (b" " * 1023 + b"\n") * 3584), purpose="batch")
    name = f"{uuid.uuid4().hex}.txt"
    (served[1] / name).write_text("".join(f"{uuid.uuid4().hex} {'w' * 2000}\n" for _ in range(300)))
    body = {
        "model": "text-embedding-v4",
        "input": {"url": f"http://{served[0]}/{name}"},
        "parameters": {"dimension": 64},
    }
    out = task_outcome(g, keys["beta"], body, within=60)
    assert out["task_status"] == "FAILED" and "stored" in out["message"], out
    c.files.delete(filler.id)
    c.files.create(file=("full.jsonl", (b" " * 1023 + b"\n") * (4 * 1024 - 64)), purpose="batch")  # 4 MB - 64 KiB


def test_a_team_s_unfinished_batches_and_its_files_are_capped(
    capped: tuple[Gateway, dict[str, str], Path], standin: StandIn
) -> None:
    """Team gamma (3 batches unfinished, 8 files at most): a 4th batch while 3 wait on a slow upstream is a
    429, and once they are cancelled there is room again; uploads stop at 8 files, less two for each
    unfinished batch's outputs (a 400 saying so). Before the caps every one of them was accepted."""
    g, keys, _ = capped
    c = client(g, keys["gamma"])
    one = orjson.dumps({"custom_id": "c0", "method": "POST", "url": "/v1/embeddings",
                        "body": {"model": WIDE, "input": uuid.uuid4().hex, "dimensions": 64}})  # fmt: skip
    f = c.files.create(file=("one.jsonl", one), purpose="batch")

    def create() -> Any:
        return c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")

    standin.control(latency_ms=3000)  # the batches stay unfinished while the test makes the 4th
    try:
        made = [create().id for _ in range(3)]
        with pytest.raises(openai.RateLimitError) as full:
            create()
        assert "3 batches not finished" in full.value.message
        for bid in made:
            c.batches.cancel(bid)
        assert all(finished(c, bid).status in ("cancelled", "completed") for bid in made)
    finally:
        standin.control(latency_ms=0)
    last = create()  # room again
    kept = [f.id]
    with pytest.raises(openai.BadRequestError) as many:
        for _ in range(20):
            kept.append(c.files.create(file=("empty.jsonl", b""), purpose="batch").id)
    assert many.value.code == "files_limit", many.value
    done = [finished(c, bid) for bid in [*made, last.id]]
    assert done[-1].status == "completed"
    outputs = [x for b in done for x in (b.output_file_id, b.error_file_id) if x]
    assert len(kept) + len(outputs) <= 8, (kept, outputs)


def test_an_upload_with_many_form_fields_is_refused(gw: tuple[Gateway, str, Path]) -> None:
    """A form of 100 fields besides purpose and the file: a 400 naming the body (it was stored: 200)."""
    g, key, _ = gw
    fields = {f"f{i}": "" for i in range(100)} | {"purpose": "batch"}
    r = httpx.post(g.url + "/v1/files", headers={"Authorization": f"Bearer {key}"}, data=fields,
                   files={"file": ("a.jsonl", b"{}\n")}, timeout=30)  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "body", r.text
    assert "parts" in r.json()["error"]["message"]


IMAGES, IMAGE_BYTES, VISION = 21, 1024 * 1024, "tongyi-embedding-vision-plus"


@pytest.fixture(scope="module")
def origin() -> Iterator[ImageServer]:
    with ImageServer() as server:
        for i in range(IMAGES):  # 1 MB that sniff as JPEG (the stand-in checks formats by their magic bytes)
            server.add(f"/img{i}.jpg", JPEG_BYTES[:-2] + bytes([i]) * (IMAGE_BYTES - len(JPEG_BYTES)) + JPEG_BYTES[-2:],
                       content_type="image/jpeg")  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def fetching(
    gateways: GatewayFactory, origin: ImageServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, str]]:
    with jobs_gateway(gateways, tmp_path_factory.mktemp("hostile-fetching"), {"alpha": {}}, media_fetch=True,
                      media_fetch_allow_hosts=[origin.netloc], models={VISION: {"max_batch": 10}}) as j:  # fmt: skip
        yield j.gw, j.keys["alpha"]


def test_a_batch_s_fetched_images_are_held_a_line_at_a_time(fetching: tuple[Gateway, str], origin: ImageServer) -> None:
    """10 lines of 21 images of 1 MB (each line a request of 21 MB; every line fetches its own). Fetched
    outside the budget and held 500 lines to a chunk, the whole file was one chunk: the gateway's peak
    memory rose by 364 MB (by 18 GB for a file of 500 such lines); a line at a time, by ~95 MB."""
    g, key = fetching
    c = client(g, key)
    salt = uuid.uuid4().hex[:8]
    lines = []
    for i in range(10):
        images = [{"image": origin.url(f"/img{j}.jpg") + f"?{salt}{i}"} for j in range(IMAGES)]
        body = {"model": VISION, "input": images, "dimensions": 64}
        lines.append(orjson.dumps({"custom_id": f"m{i}", "method": "POST", "url": "/v1/embeddings", "body": body}))
    f = c.files.create(file=("media.jsonl", b"\n".join(lines)), purpose="batch")
    peak = PeakGrowth(g.proc.pid)
    b = finished(c, c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id)
    grown_mb = peak.mb()
    assert b.status == "completed" and b.request_counts.completed == 10, b  # type: ignore[union-attr]
    assert grown_mb < 200, f"the batch raised the gateway's peak memory by {grown_mb:.0f} MB"


def test_a_batch_leaves_no_part_that_no_file_holds(gw: tuple[Gateway, str, Path]) -> None:
    """Three good lines: an output file and no error file, and no error part left in storage (there was
    one, empty); deleting the output file leaves nothing of the batch, deleting the input nothing of it
    (their folders were left)."""
    g, key, root = gw
    c = client(g, key)
    body = {"model": WIDE, "input": uuid.uuid4().hex, "dimensions": 64}
    lines = [orjson.dumps({"custom_id": f"g{i}", "method": "POST", "url": "/v1/embeddings", "body": body})
             for i in range(3)]  # fmt: skip
    f = c.files.create(file=("good.jsonl", b"\n".join(lines)), purpose="batch")
    b = finished(c, c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id)
    assert b.status == "completed" and b.output_file_id and not b.error_file_id, b
    parts = root / "batches" / b.id
    assert [p.name for p in (parts / "out").iterdir()] == ["000000"]
    c.files.delete(b.output_file_id)
    left = [p.relative_to(root) for p in files_in(parts)]
    assert left == [] and not parts.exists(), left
    c.files.delete(f.id)
    assert not (root / "files" / f.id).exists()


def test_uploads_cut_off_midway_give_back_what_they_held(capped: tuple[Gateway, dict[str, str], Path]) -> None:
    """Three uploads announcing 3.5 MB each, for a team of a 4 MB cap, each cut off after 1 MB (its room is
    held from the start: the second would be a 413 had the first kept it); then a whole one passes, and
    no partial file is left in storage."""
    g, keys, root = capped
    host, port = g.url.removeprefix("http://").split(":")
    form = (b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n')  # fmt: skip
    head = (f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys['delta']}\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {3584 * 1024}\r\n\r\n")  # fmt: skip
    c = client(g, keys["delta"])
    for _ in range(3):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(head.encode() + form + b"x" * MB)
            eventually(lambda: part_files(root), what="the upload under way")
        eventually(lambda: not part_files(root), what="the partial file removed")

    def whole() -> Any:
        try:
            return c.files.create(file=("whole.jsonl", (b" " * 1023 + b"\n") * 3584), purpose="batch")
        except openai.APIStatusError as exc:  # the last cut-off upload gives its room back just after its file
            raise AssertionError(exc.message) from None

    eventually(whole, within=10, interval=0.2, what="a whole upload of 3.5 MB")


def test_uploads_of_no_declared_length_hold_their_team_s_room_as_it_comes(
    capped: tuple[Gateway, dict[str, str], Path],
) -> None:
    """An upload sent chunked (no Content-Length) held the whole max_file_bytes (200 MB) of its team's stored
    bytes while it lasted: for a team capped at 4 MB, every such upload was a 413 before a byte was read. It
    holds 1 MiB at a time as its bytes come: two of 1.5 MB at once pass (their room 4 MB at most, together),
    a third of 3 MB passes the cap as it comes and is a 413 that gives back what it held, leaving no file."""
    g, keys, root = capped
    headers = {"authorization": f"Bearer {keys['zeta']}", "content-type": "multipart/form-data; boundary=B"}

    def chunked(name: str, size: int) -> httpx.Response:
        def body() -> Iterator[bytes]:
            disposition = f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
            yield b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--B\r\n' + disposition
            for _ in range(size // (256 * 1024)):
                yield (b" " * 1023 + b"\n") * 256
                time.sleep(0.02)  # the two uploads overlap
            yield b"\r\n--B--\r\n"

        return httpx.post(g.url + "/v1/files", content=body(), headers=headers, timeout=60)

    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda n=n: answers.append(chunked(f"c{n}.jsonl", 1536 * 1024))) for n in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in answers] == [200, 200], [r.text[:200] for r in answers]
    assert sorted(r.json()["bytes"] for r in answers) == [1536 * 1024] * 2
    over = chunked("over.jsonl", 3 * MB)
    assert over.status_code == 413 and "4194304 bytes of files" in over.json()["error"]["message"], over.text
    c = client(g, keys["zeta"])
    assert sorted(f.filename for f in c.files.list()) == ["c0.jsonl", "c1.jsonl"]
    eventually(lambda: not part_files(root), what="the refused upload's partial file removed")
    c.files.delete(answers[0].json()["id"])
    again = chunked("again.jsonl", 2 * MB)  # 1.5 MB stored, 2 MB more: the 413 gave its room back
    assert again.status_code == 200, again.text


def test_a_task_s_fetched_input_has_the_lines_of_an_uploaded_file_at_most(
    capped: tuple[Gateway, dict[str, str], Path], served: tuple[str, Path]
) -> None:
    """A task naming a text file of 5,001 short lines (max_lines 5,000): it fails saying so. An upload of
    those lines is refused; the fetched file was not counted, and the task embedded all 5,001."""
    g, keys, _ = capped
    name = f"{uuid.uuid4().hex}.txt"
    (served[1] / name).write_text("".join(f"{uuid.uuid4().hex[:8]} {i}\n" for i in range(5001)))
    body = {"model": "text-embedding-v4", "input": {"url": f"http://{served[0]}/{name}"}, "parameters": {}}
    out = task_outcome(g, keys["epsilon"], body, within=120)
    assert out["task_status"] == "FAILED" and "5000 lines" in out["message"], out


def test_stalled_downloads_give_their_budget_back_at_the_write_deadline(stalling: tuple[Gateway, str]) -> None:
    """4 downloads of an 8 MB file that are never read fill the budget; a 5th waits for room (up to 20 s)
    and gets it once the write deadline (2 s) has aborted them, not when their readers go."""
    g, key = stalling
    c = client(g, key)
    f = c.files.create(file=("big.jsonl", (b"x" * 1023 + b"\n") * (8 * 1024)), purpose="batch")
    stalled: list[socket.socket] = []
    try:
        for _ in range(4):
            s = stalled_download(g, key, f.id)
            assert status_of(s) == b"200"
            stalled.append(s)
        r = httpx.get(g.url + f"/v1/files/{f.id}/content", headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert r.status_code == 200 and len(r.content) == 8 * MB, r.text[:200]
    finally:
        for s in stalled:
            s.close()


def test_stalled_downloads_give_their_transfer_desks_back_at_the_write_deadline(stalling: tuple[Gateway, str]) -> None:
    """A download whose reader never reads holds its team's transfer desk until the write deadline (2 s here)
    aborts it, and then gives it back: eight such downloads hold all of the team's desks (a ninth is a 429;
    four of them wait for the budget's room meanwhile, which the aborts free); once aborted, eight downloads
    read at once are all served (a desk kept by an aborted connection would shut the team out for good)."""
    g, key = stalling
    c = client(g, key)
    f = c.files.create(file=("stalls.jsonl", (b"x" * 1023 + b"\n") * (8 * 1024)), purpose="batch")
    headers = {"Authorization": f"Bearer {key}"}
    stalled = [stalled_download(g, key, f.id) for _ in range(8)]
    try:

        def ninth_refused() -> bool:
            ninth = httpx.get(g.url + f"/v1/files/{f.id}/content", headers=headers, timeout=60)
            return ninth.status_code == 429 and "transfer_concurrency" in ninth.text

        eventually(ninth_refused, within=3, interval=0.1, what="a ninth download refused while eight stall")

        async def eight() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=g.url, headers=headers, timeout=60) as http:
                return await asyncio.gather(*(http.get(f"/v1/files/{f.id}/content") for _ in range(8)))

        def all_served() -> bool:
            answers = asyncio.run(eight())
            assert [(r.status_code, len(r.content)) for r in answers] == [(200, 8 * MB)] * 8
            return True

        eventually(all_served, within=40, interval=0.5, what="the aborted downloads' desks given back")
    finally:
        for s in stalled:
            s.close()
        c.files.delete(f.id)


def test_a_killed_gateway_s_half_written_upload_is_swept_by_the_next(gateways: GatewayFactory, tmp_path: Path) -> None:
    """A gateway killed (SIGKILL, as the OOM killer does) during an upload leaves its `.part` file: nothing
    of it renames or removes it. The next gateway's first files sweep deletes it once it is older than an
    hour (its time moved back here), and leaves a live upload's alone."""
    with jobs_gateway(gateways, tmp_path, {"alpha": {}}, jobs={"files_sweep_s": 1}) as j:
        host, port = j.gw.url.removeprefix("http://").split(":")
        form = (b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
                b'--B\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n')  # fmt: skip
        head = (f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {j.keys['alpha']}\r\n"
                f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {3 * MB}\r\n\r\n")  # fmt: skip
        with socket.create_connection((host, int(port))) as s:
            s.sendall(head.encode() + form + b"x" * MB)
            (left,) = eventually(lambda: part_files(j.files), what="the upload under way")
            j.gw.proc.kill()
            j.gw.proc.wait(10)
        assert left.exists()  # nothing of the killed process removed it
        live = left.with_name("live.part")  # as a live upload of another replica: just written to
        live.write_bytes(b"x")
        os.utime(left, (time.time() - 7200, time.time() - 7200))
        after = gateways.start(redis_url=j.redis.url, config=str(j.config))
        eventually(lambda: not left.exists(), within=30, what="the killed upload's file swept")
        assert live.exists()
        stop(after.proc)


def test_result_downloads_leave_the_event_loop_to_other_requests(gw: tuple[Gateway, str, Path]) -> None:
    """A task's result is gzipped as it streams. Compressed on the event loop (zlib level 6: ~20-45 ms per
    256 KiB chunk of vectors), three downloads of a 40 MB result kept the loop busy for seconds, and every
    other request of every team waited behind each chunk. Compressed in a thread (level 1, zlib lets go of
    the GIL), the loop stays free: a probe's /healthz answers stay quick while the downloads run."""
    g, key, _ = gw
    c = client(g, key)
    f = c.files.create(file=("docs.txt", "".join(f"result doc {i}\n" for i in range(2000)).encode()), purpose="batch")
    body = {"model": "text-embedding-v4", "input": {"url": f.id}, "parameters": {}}
    out = task_outcome(g, key, body, within=120)
    assert out["task_status"] == "SUCCEEDED", out
    sizes: list[int] = []

    def download() -> None:
        with httpx.stream("GET", out["url"], timeout=120) as r:
            assert r.status_code == 200
            sizes.append(sum(len(b) for b in r.iter_raw()))

    threads = [threading.Thread(target=download) for _ in range(3)]
    for t in threads:
        t.start()
    took = healthz_while(g, lambda: any(t.is_alive() for t in threads), "3 downloads of the result")
    for t in threads:
        t.join()
    print(f"the downloads: {sizes} gzipped bytes")
    assert len(sizes) == 3 and min(sizes) > 1_000_000, sizes
    assert took[len(took) // 2] < 0.02, took  # p50


def test_a_batch_of_wide_lines_leaves_the_event_loop_to_other_requests(
    gw: tuple[Gateway, str, Path], standin: StandIn
) -> None:
    """Jobs run in the gateway's processes, and an upstream's answer is parsed on the event loop in one go.
    6 lines of 2,048 new texts at 1,536 dimensions: each was one upstream call whose answer (~60 MB of JSON
    floats) held the loop ~330 ms, and each line's output (~33 MB) was rendered at once. Now an upstream
    call asks for 262,144 values at most (170 vectors here) and the output is rendered a slice per loop
    turn, as the embeddings route writes a large answer. A probe's /healthz meanwhile (printed, not asserted:
    a loaded machine moves it): p90 12 ms, max 325-448 ms before (6 lines of the same texts); p90 31 ms, max
    87 ms after (6 lines of new texts: 72 calls)."""
    g, key, _ = gw
    c = client(g, key)
    salt = uuid.uuid4().hex[:8]
    lines = [orjson.dumps({"custom_id": f"v{i}", "method": "POST", "url": "/v1/embeddings",
                           "body": {"model": WIDE, "input": [f"{salt} {i} {j}" for j in range(2048)]}})
             for i in range(6)]  # fmt: skip
    f = c.files.create(file=("wide.jsonl", b"\n".join(lines)), purpose="batch")
    bid = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id
    took = healthz_while(g, lambda: c.batches.retrieve(bid).status not in FINISHED, "the batch")
    b = c.batches.retrieve(bid)
    assert b.status == "completed" and b.request_counts.completed == 6, b  # type: ignore[union-attr]
    out = c.files.content(b.output_file_id).content  # type: ignore[arg-type]
    first = orjson.loads(out.split(b"\n", 1)[0])["response"]["body"]
    assert [d["index"] for d in first["data"]] == list(range(2048)) and len(first["data"][0]["embedding"]) == 1536
    sizes = [x["n_items"] for x in standin.calls() if x["model"] == WIDE]
    assert sum(sizes) == 6 * 2048 and max(sizes) == FLOAT_CALL_VALUES // 1536, sizes
    assert len(took) >= 20


def test_an_upload_to_a_disk_short_of_its_free_room_is_refused_and_leaves_nothing(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    """Each team's files are capped, but many teams within their caps could fill the disk: a write to local
    storage stops while its disk has less than jobs.min_free_bytes free (1 GiB by default; here more than
    any disk has). The upload gets 503 `storage_full` and leaves no file."""
    with jobs_gateway(gateways, tmp_path, {"alpha": {}}, jobs={"min_free_bytes": 10**18}) as j:
        c = client(j.gw, j.keys["alpha"])
        with pytest.raises(openai.InternalServerError) as refused:
            c.files.create(file=("a.jsonl", b'{"custom_id": "a"}\n' * 1000), purpose="batch")
        assert refused.value.status_code == 503
        assert refused.value.code == "storage_full" and "min_free_bytes" in refused.value.message
        assert not files_in(j.files)


def test_result_downloads_count_toward_the_task_s_team_s_share(tight: tuple[Gateway, str]) -> None:
    """A task's result URL needs no key, so its downloads had no team: stalled ones were bound by the whole
    budget only (21 of 768 KiB in 16 MiB). Now they count toward the task's team's share (4 MiB): 5 are
    answered and the others get 429 after the wait."""
    g, key = tight
    c = client(g, key)
    f = c.files.create(
        file=("docs.txt", "".join(f"stalled result {i}\n" for i in range(1000)).encode()), purpose="batch"
    )
    out = task_outcome(g, key, {"model": "text-embedding-v4", "input": {"url": f.id}, "parameters": {}}, within=120)
    assert out["task_status"] == "SUCCEEDED", out
    path = out["url"].removeprefix(g.url)
    readers = [stalled_download(g, None, path=path) for _ in range(30)]
    try:
        statuses = [status_of(s) for s in readers]
    finally:
        for s in readers:
            s.close()
    served, refused = statuses.count(b"200"), statuses.count(b"429")
    assert served + refused == len(readers) and served <= 6, statuses


def test_a_team_looping_on_listings_holds_four_of_them_at_once(capped: tuple[Gateway, dict[str, str], Path]) -> None:
    """A team's management requests (listings, lookups, reports) are its CPU, not its rate limits: a team
    looping on them from many connections had every one served at once (a listing of 10,000 files is ~50 ms
    of a worker's CPU), each step of each taking its turn of the event loop ahead of every other team's. At
    most `management_concurrency` (4, the default) of a team are in progress in a process; the next is a 429
    in its wire format, before any work, while another team's are served; the desks come back as they end.
    gamma sends 40 listings at once, five times over (files and DashScope tasks); on the old code all 200."""
    g, keys, _ = capped
    gamma = {"authorization": f"Bearer {keys['gamma']}"}
    delta = client(g, keys["delta"])
    for i in range(4):  # listings with something in them (the fixture's teams keep 8 files at most)
        delta.files.create(file=(f"d{i}.jsonl", b'{"custom_id": "a"}\n'), purpose="batch")
    held = len(delta.files.list().data)

    async def flood(path: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=g.url, headers=gamma, limits=limits, timeout=30) as c:
            out: list[httpx.Response] = []
            for _ in range(5):
                out += await asyncio.gather(*(c.get(path) for _ in range(40)))
            return out

    listed: list[int] = []
    done = threading.Event()

    def other_team() -> None:
        while not done.is_set():
            listed.append(len(delta.files.list().data))

    t = threading.Thread(target=other_team)
    t.start()
    try:
        files = asyncio.run(flood("/v1/files"))
        tasks = asyncio.run(flood("/api/v1/tasks"))
    finally:
        done.set()
        t.join()
    for answers in (files, tasks):
        codes = [r.status_code for r in answers]
        print(f"{answers[0].request.url.path}: {codes.count(200)} served, {codes.count(429)} refused")
        assert set(codes) <= {200, 429} and codes.count(200) >= 5 * 4 and codes.count(429) >= 5, codes
    refused = next(r for r in files if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and refused.headers["retry-after"] == "1"
    assert "management_concurrency" in refused.json()["error"]["message"]
    assert next(r for r in tasks if r.status_code == 429).json()["code"] == "Throttling.RateQuota"
    assert listed and set(listed) == {held}, listed  # the other team's, meanwhile: each served whole
    scrape = httpx.get(g.url + "/metrics").text
    counted = [line for line in scrape.splitlines()
               if line.startswith("gateway_ratelimit_rejections_total{") and 'limit="management"' in line
               and 'team="gamma"' in line]  # fmt: skip
    total = sum(r.status_code == 429 for r in files + tasks)
    assert counted and float(counted[0].rsplit(" ", 1)[1]) == total, counted
    c = client(g, keys["gamma"])
    for _ in range(10):  # one after another: never refused (every desk came back)
        c.batches.list()
        c.files.list()


def test_a_team_s_downloads_are_eight_at_once(capped: tuple[Gateway, dict[str, str], Path]) -> None:
    """Uploads and downloads of files and results take a transfer desk of their team: a download read at
    loopback speed writes a chunk every loop turn, and 128 of one team's at once took another team's hits
    from 2.5 to 84 ms (p50; a one-off measurement). At most `transfer_concurrency` (8, the default) are in
    progress per team and process; the next is a 429 before any byte. eta downloads a 3 MB file 40 at once,
    five times over: every download served is whole, the rest refused (on the old code all 200 served), and
    one after another after, none is."""
    g, keys, _ = capped
    eta = client(g, keys["eta"])
    size = 3 * MB
    fid = eta.files.create(file=("big.jsonl", (b'{"custom_id": "a"}' + b" " * 1005 + b"\n") * (size // 1024)),
                           purpose="batch").id  # fmt: skip
    headers = {"authorization": f"Bearer {keys['eta']}"}

    async def flood() -> list[tuple[int, int, str]]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=g.url, headers=headers, limits=limits, timeout=60) as c:
            out: list[tuple[int, int, str]] = []
            for _ in range(5):
                answers = await asyncio.gather(*(c.get(f"/v1/files/{fid}/content") for _ in range(40)))
                out += [(r.status_code, len(r.content), r.text if r.status_code != 200 else "") for r in answers]
            return out

    try:
        got = asyncio.run(flood())
        codes = [code for code, _, _ in got]
        print(f"downloads: {codes.count(200)} served, {codes.count(429)} refused")
        assert set(codes) <= {200, 429} and codes.count(200) >= 5 * 8 and codes.count(429) >= 5, codes
        assert {n for code, n, _ in got if code == 200} == {size}
        refusal = next(text for code, _, text in got if code == 429)
        assert "transfer_concurrency" in refusal and "rate_limit_exceeded" in refusal, refusal
        for _ in range(10):
            assert len(eta.files.content(fid).read()) == size
    finally:
        eta.files.delete(fid)
