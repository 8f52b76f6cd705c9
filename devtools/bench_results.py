"""Benchmark of the results pass (issue 18): what counting a job's outputs adds to their copy.

The copy streams a job's outputs past a ``ResultsReader`` (``batch_relay.results.summary``), which counts
requests, failures by code and tokens while the bytes go by. This measures that pass over

- a Gemini API responses file of ``--mib`` MiB (``{"key", "response"}`` lines, 1 in 100 an ``error``), and
- a set of Vertex AI prediction shards of ``--mib`` MiB in all (``predictions_NNNNN.jsonl``, rows that echo
  their request; 1 in 100 with a ``status``),

beside a bare loop over the same bytes: read the file line by line, ``json.loads`` each line (the same JSON
library), nothing else. The ratio pass / loop is the goal (<= 1.3x). Each side runs in a child process of its
own, so its peak RSS (``ru_maxrss``) is its own: the pass fed in ``--chunk-kib`` chunks, as a download
delivers them. ``--small-mib`` repeats both at a small size: the pass's peak RSS is flat in the file's size.
``--rounds`` alternates the sides that many times (the median is reported): on a shared machine only the
ratios of one run are meaningful, not the absolute figures.

    python -m devtools.bench_results [--mib 1024] [--small-mib 64] [--rounds 3] [--chunk-kib 64] [--api both]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
SHARD_MIB = 256  # Vertex AI writes its predictions in shards; each at most this big here


def _gemini_line(i: int) -> bytes:
    if i % 100 == 99:
        return (b'{"key": "req-%d", "error": {"code": 3, "message": "Request contains an invalid argument."}}\n'
                % i)
    text = f"The answer to request {i}: " + "a few words of generated text " * (4 + i % 9)
    return json.dumps({"key": f"req-{i}", "response": {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                        "avgLogprobs": -0.21}],
        "usageMetadata": {"promptTokenCount": 120 + i % 50, "candidatesTokenCount": 40 + i % 30,
                          "totalTokenCount": 160 + i % 80, "thoughtsTokenCount": i % 3,
                          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120 + i % 50}]},
        "modelVersion": "gemini-2.5-flash", "responseId": f"r{i:012d}"}}).encode() + b"\n"


def _vertex_line(i: int) -> bytes:
    request = {"contents": [{"role": "user", "parts": [{"text": f"Describe item {i} " + "in detail " * (i % 7)}]}],
               "generationConfig": {"temperature": 0.2, "maxOutputTokens": None}}
    if i % 100 == 99:
        return json.dumps({"status": 'Bad Request: {"error": {"code": 400, "message": "invalid image"}}',
                           "processed_time": "2026-01-05T10:00:00.000+00:00", "request": request,
                           "response": None}).encode() + b"\n"
    text = f"Item {i} is " + "a thing of some description " * (4 + i % 9)
    return json.dumps({"status": "", "processed_time": "2026-01-05T10:00:00.000+00:00", "request": request,
                       "response": {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                                    "finishReason": "STOP"}],
                                    "usageMetadata": {"promptTokenCount": 80 + i % 40,
                                                      "candidatesTokenCount": 50 + i % 20,
                                                      "totalTokenCount": 130 + i % 60},
                                    "modelVersion": "gemini-2.5-flash"}}).encode() + b"\n"


def make_files(api: str, mib: int, directory: Path) -> list[Path]:
    """``mib`` MiB of outputs: one responses file (Gemini), or shards of at most ``SHARD_MIB`` (Vertex)."""
    directory.mkdir(parents=True, exist_ok=True)
    line = _gemini_line if api == "gemini" else _vertex_line
    shard_bytes = mib * MIB if api == "gemini" else SHARD_MIB * MIB
    paths: list[Path] = []
    left, i = mib * MIB, 0
    while left > 0:
        name = "responses.jsonl" if api == "gemini" else f"predictions_{len(paths) + 1:05d}.jsonl"
        path = directory / name
        size = 0
        with open(path, "wb") as out:
            block: list[bytes] = []
            while size < min(shard_bytes, left):
                data = line(i)
                i += 1
                block.append(data)
                size += len(data)
                if len(block) == 4096:
                    out.write(b"".join(block))
                    block.clear()
            out.write(b"".join(block))
        paths.append(path)
        left -= size
    return paths


def _loop(paths: list[str]) -> dict:
    """The bare loop: each line parsed by the same JSON library, nothing counted."""
    loads, lines = json.loads, 0
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                loads(line)
                lines += 1
    return {"lines": lines}


def _results_pass(api: str, paths: list[str], chunk: int) -> dict:
    """The results pass as the copy runs it: chunks fed to a ResultsReader, one file after the other."""
    from batch_relay.results.summary import ResultsReader  # (imported before the clock starts: see child)

    reader = ResultsReader(api)
    for path in paths:
        with open(path, "rb") as f:
            while data := f.read(chunk):
                reader.feed_chunk(data)
        reader.end_file()
    summary = reader.finish()
    reader.failed_lines.close()
    return {"lines": summary.succeeded + summary.failed + summary.unparsed, "failed": summary.failed,
            "total_tokens": summary.usage.total if summary.usage else None}


def child(argv: list[str]) -> int:
    side, api, chunk, paths = argv[0], argv[1], int(argv[2]), argv[3:]
    if side == "pass":
        import batch_relay.results.summary  # noqa: F401  (its import is not the pass's time)
    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = _loop(paths) if side == "loop" else _results_pass(api, paths, chunk)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
    out.update(cpu_s=after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall_s=wall,
               maxrss_mib=after.ru_maxrss / 1024)
    print(json.dumps(out))
    return 0


def run_side(side: str, api: str, paths: list[Path], chunk: int) -> dict:
    argv = [sys.executable, "-m", "devtools.bench_results", "--child", side, api, str(chunk), *map(str, paths)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(api: str, paths: list[Path], rounds: int, chunk: int) -> dict:
    runs: dict[str, list[dict]] = {"loop": [], "pass": []}
    for r in range(rounds):  # alternate the sides (and which goes first): both see the same machine
        for side in ("loop", "pass") if r % 2 == 0 else ("pass", "loop"):
            runs[side].append(run_side(side, api, paths, chunk))
    size = sum(p.stat().st_size for p in paths)
    out: dict = {"api": api, "bytes": size, "files": len(paths), "lines": runs["loop"][0]["lines"]}
    if runs["pass"][0]["lines"] != out["lines"]:
        raise SystemExit(f"the pass counted {runs['pass'][0]['lines']} lines, the loop {out['lines']}")
    for side, got in runs.items():
        out[side] = {key: round(statistics.median(run[key] for run in got), 3)
                     for key in ("cpu_s", "wall_s", "maxrss_mib")}
    out["ratio_cpu"] = round(out["pass"]["cpu_s"] / out["loop"]["cpu_s"], 3)
    out["ratio_wall"] = round(out["pass"]["wall_s"] / out["loop"]["wall_s"], 3)
    # what the pass adds to a copy (which moves the bytes anyway): its time per GB of outputs
    out["pass_cpu_s_per_gb"] = round(out["pass"]["cpu_s"] / (size / 1e9), 2)
    out["pass_mb_per_s"] = round(size / 1e6 / out["pass"]["cpu_s"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m devtools.bench_results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of each API's outputs (default 1024)")
    parser.add_argument("--small-mib", type=int, default=64, help="the small size, for peak RSS (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side (median reported)")
    parser.add_argument("--chunk-kib", type=int, default=64, help="size of the chunks fed to the pass")
    parser.add_argument("--api", choices=("gemini", "vertex", "both"), default="both")
    parser.add_argument("--dir", help="where to write the files (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    apis = ("gemini", "vertex") if args.api == "both" else (args.api,)
    sizes = [args.mib] + ([args.small_mib] if args.small_mib and args.small_mib != args.mib else [])
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for api in apis:
            for mib in sizes:
                started = time.monotonic()
                paths = make_files(api, mib, Path(tmp) / f"{api}-{mib}")
                print(f"{api} {mib} MiB: {len(paths)} file(s) written in {time.monotonic() - started:.0f}s; "
                      f"{args.rounds} rounds of each side", flush=True)
                got = measure(api, paths, args.rounds, args.chunk_kib * 1024)
                results.append(got)
                print(line(got), flush=True)
                for path in paths:
                    os.unlink(path)
    print("(each side in its own process; the machine may be shared: compare the ratios within this run)")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


def line(got: dict) -> str:
    loop, done = got["loop"], got["pass"]
    return (f"  {got['api']:6} {got['bytes'] / MIB:6.0f} MiB {got['lines']:>9,} lines | loop cpu {loop['cpu_s']:6.2f}s "
            f"wall {loop['wall_s']:6.2f}s rss {loop['maxrss_mib']:5.0f} MiB | pass cpu {done['cpu_s']:6.2f}s "
            f"wall {done['wall_s']:6.2f}s rss {done['maxrss_mib']:5.0f} MiB | pass/loop cpu {got['ratio_cpu']:.2f}x "
            f"wall {got['ratio_wall']:.2f}x | pass {got['pass_cpu_s_per_gb']:.1f} cpu-s per GB")


if __name__ == "__main__":
    sys.exit(main())
