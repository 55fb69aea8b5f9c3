"""Time this project against the reference ``bandersnatch`` on a local synthetic upstream.

For one corpus (see benchmarks/upstream.py) and one ``workers`` value, each tool makes a
full sync into an empty directory, then a run after 10 projects changed, then a run with
no change. For every run: wall seconds, CPU seconds (user + system, the tool and all its
processes), peak RSS (summed over the tool's processes, sampled every 50 ms), requests
made, and the upstream's own CPU seconds. Each mirror is then checked file by file
against the upstream, so that a fast wrong mirror cannot win.

usage: python benchmarks/bench.py CORPUS [--scale F] [--workers N] [--tools ours,reference]
                                  [--latency-ms N] [--display-names] [--backend s3] [--seed]
                                  [--dir DIR | --keep]

With ``--seed`` (this project only; for corpus (d), a million projects) the full sync is
replaced by laying the mirror's state down directly, as a completed full sync leaves it:
``projects.json`` with a record for every project, ``status``, ``generation``,
``upstream-method``, and pages and files for a sample of the projects (every project a
``/_change`` picks among them), synced by the tool's own ``sync`` command over HTTP, which
also renders the root index from the records. The first run after it must be a no-op (one
request, nothing written): the tool accepts the seeded mirror as up to date. Then the
10-changed and no-change runs, and the time to render the root index from the records.

The mirrors go to a temporary directory (in /dev/shm with ``--seed``) that is removed at
the end, unless ``--dir`` names one or ``--keep`` is given (then its path is printed).

With ``--backend s3`` this project also runs against a local S3 server (moto's standalone
server, ``pip install -e '.[test]'``) as the tool ``ours-s3``, in the same run as the
filesystem backend; its mirror is copied out of the bucket to be checked.

With ``--latency-ms`` every answer of the upstream is delayed by that round trip, and each
run is also given as a ratio to its latency bound, ``requests x round trip / workers``:
the time the run would take if every worker always had a request in flight.

The reference tool (bandersnatch 8.2.0, Python >= 3.12) is installed on first use into
benchmarks/.ref-venv from the package registry. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REF_VENV = HERE / ".ref-venv"
REF_VERSION = "8.2.0"


def find_python312() -> str:
    pyenv = Path.home() / ".pyenv" / "versions"
    candidates = [shutil.which("python3.13"), shutil.which("python3.12")]
    candidates += [str(v / "bin" / "python3") for v in sorted(pyenv.glob("3.1[2-9]*"), reverse=True)]
    for path in candidates:
        # a pyenv shim is on PATH even where that version is not selected: it must run
        if path and subprocess.run([path, "-c", ""], capture_output=True).returncode == 0:
            return path
    raise SystemExit("the reference tool needs Python >= 3.12; none found (set REF_PYTHON)")


def reference_command() -> list[str]:
    exe = REF_VENV / "bin" / "bandersnatch"
    if not exe.exists():
        python = os.environ.get("REF_PYTHON") or find_python312()
        print(f"installing bandersnatch {REF_VERSION} into {REF_VENV} with {python}", flush=True)
        subprocess.run([python, "-m", "venv", "--clear", str(REF_VENV)], check=True)
        subprocess.run([str(REF_VENV / "bin" / "pip"), "install", "-q", f"bandersnatch=={REF_VERSION}"], check=True)
    return [str(exe)]


def ours_command() -> list[str]:
    """This checkout's tool, with its bytecode compiled as an installed package has it.

    pip compiles ``.pyc`` files when it installs a package (the reference tool has them);
    an editable checkout run with PYTHONDONTWRITEBYTECODE set would otherwise compile its
    modules from source on every run (~50 ms, most of a no-change run).
    """
    import bandersnatch_classic

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(bandersnatch_classic.__file__).parent)], check=True)
    return [sys.executable, "-m", "bandersnatch_classic"]


def seed_mirror(cmd: list[str], conf: Path, directory: Path, master: str, log: Path) -> dict[str, float]:
    """Lay down what a completed full sync of the upstream leaves in ``directory``.

    Records for every listed project (at the serial the upstream lists), ``status`` at the
    upstream's serial, ``generation``, ``upstream-method`` (XML-RPC, found working now), and
    pages and files for a sample, written by the tool's ``sync`` command, which renders the
    root index from the records as a ``mirror`` run does. The sample is about 1,000 projects,
    every ``stride``-th, which includes the ten ``/_change`` picks (they are spread over the
    corpus at multiples of a tenth of it) when the count is a multiple of 10,000.
    """
    request = urllib.request.Request(f"{master}/simple/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        listing = json.loads(response.read())
    projects = [(p["name"], p["_last-serial"]) for p in listing["projects"]]
    directory.mkdir(parents=True, exist_ok=True)
    records = {canonical(n): (s if canonical(n) == n else [n, s]) for n, s in projects}
    (directory / "projects.json").write_text(json.dumps(records, separators=(",", ":")))
    (directory / "generation").write_text("5")
    (directory / "status").write_text(str(listing["meta"]["_last-serial"]))
    (directory / "upstream-method").write_text(f"xmlrpc {int(time.time())} {master}\n")
    stride = max(1, len(projects) // 1000)
    sample = [name for name, _ in projects[::stride]]
    run = timed_run([*cmd, "-c", str(conf), "sync", *sample], log)
    (directory / "web" / "last-modified").write_text(time.strftime("%Y%m%dT%H:%M:%S\n", time.gmtime()))
    return {**run, "sample": len(sample)}


def state_mtimes(directory: Path) -> dict[str, int]:
    """Modification times of the state files and root index a no-op run must not touch."""
    names = ["projects.json", "status", "web/simple/index.html", "web/simple/index.v1_json"]
    return {name: (directory / name).stat().st_mtime_ns for name in names if (directory / name).exists()}


def root_render(directory: Path) -> dict[str, float]:
    """Seconds and megabytes to render the root index (HTML and PEP 691 JSON) from the records."""
    from bandersnatch_classic import pages
    from bandersnatch_classic.state import Records

    start = time.perf_counter()
    rows = Records.from_json((directory / "projects.json").read_text()).rows()
    loaded = time.perf_counter()
    html = pages.root_html(rows)
    rendered_html = time.perf_counter()
    page = pages.root_json(rows, 1)
    done = time.perf_counter()
    return {"projects": len(rows), "load": loaded - start, "html": rendered_html - loaded, "html_mb": len(html) / 1e6,
            "json": done - rendered_html, "json_mb": len(page) / 1e6}


def write_config(path: Path, directory: Path, master: str, workers: int, tool: str, s3: str = "") -> None:
    """``s3``: the endpoint of the S3 server; the mirror then goes to the bucket ``bench``."""
    lines = [
        "[mirror]",
        f"directory = {f'/bench/{tool}' if s3 else directory}",
        f"master = {master}",
        "timeout = 30",
        "global-timeout = 18000",
        f"workers = {workers}",
        "hash-index = false",
        "stop-on-error = false",
        "json = false",
        "release-files = true",
        "cleanup = false",
        "compare-method = hash",
        "digest_name = sha256",
        "keep_index_versions = 0",
        "simple-format = ALL",
        f"storage-backend = {'s3' if s3 else 'filesystem'}",
        "allow-non-https = true",
    ]
    if s3:
        lines += ["[s3]", f"endpoint_url = {s3}", "region_name = us-east-1",
                  "aws_access_key_id = bench", "aws_secret_access_key = bench"]
    path.write_text("\n".join(lines) + "\n")


class TreeSampler(threading.Thread):
    """Peak memory of a process and all its descendants: the sum of their PSS.

    PSS (proportional set size) shares each page among the processes mapping it, so forked
    workers that share their parent's pages are not counted twice; for a single process it
    equals RSS less its share of libraries mapped by others.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, self._tree_rss())

    def _tree_rss(self) -> int:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
        total, stack = 0, [self.pid]
        while stack:
            pid = stack.pop()
            total += _pss(pid)
            stack += [child for child, parent in parents.items() if parent == pid]
        return total


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def http_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def timed_run(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd``; wall and CPU seconds of it and its waited-for descendants, peak tree RSS."""
    start = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    sampler.done.set()
    sampler.join()
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": sampler.peak / 1e6,
            "exit": proc.returncode}


def check_mirror(directory: Path, manifest: dict) -> str:
    """'ok', or what is wrong: every upstream file with its sha256, every project page."""
    web = directory / "web"
    missing = wrong = 0
    for rel, sha in manifest["files"].items():
        if rel.endswith(".metadata") and not (web / rel).exists():
            continue  # the reference tool does not fetch .metadata files
        try:
            digest = hashlib.sha256()
            with open(web / rel, "rb") as fh:  # hashlib.file_digest is 3.11+; the suite runs on 3.10 too
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != sha:
                wrong += 1
        except FileNotFoundError:
            missing += 1
    pages = sum(1 for name in manifest["projects"] if not (web / "simple" / canonical(name) / "index.html").exists())
    if missing or wrong or pages:
        return f"WRONG: {missing} files missing, {wrong} differ, {pages} pages missing"
    return "ok"


def start_s3_server() -> tuple[subprocess.Popen[bytes], str]:
    """moto's standalone S3 server on a free port of 127.0.0.1, with the bucket ``bench``."""
    import socket

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    for _ in range(100):
        try:
            client.create_bucket(Bucket="bench")
            return proc, endpoint
        except Exception:  # noqa: BLE001  # not listening yet
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the moto S3 server did not start")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def copy_bucket_out(endpoint: str, prefix: str, directory: Path) -> None:
    """Every object under ``prefix`` of the bucket ``bench``, written to ``directory``."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            path = directory / item["Key"][len(prefix) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket="bench", Key=item["Key"])["Body"].read())


def canonical(name: str) -> str:
    """PEP 503's normalised name: the page directory of a project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=["a", "b", "c", "d"])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the corpus's projects")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--tools", default="ours,reference")
    parser.add_argument("--dir", default="",
                        help="where the mirrors and the tools' logs go, kept afterwards (default: a temporary "
                             "directory, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="round trip added to every upstream answer")
    parser.add_argument("--display-names", action="store_true",
                        help="projects with non-canonical names, whose JSON API redirects other spellings")
    parser.add_argument("--backend", choices=["filesystem", "s3"], default="filesystem",
                        help="s3: also run this project against a local S3 server (the tool ours-s3)")
    parser.add_argument("--seed", action="store_true",
                        help="lay the mirror down as a full sync leaves it instead of running one (this project only)")
    args = parser.parse_args()
    if args.seed and (args.tools != "ours" or args.backend != "filesystem"):
        parser.error("--seed runs this project only: give --tools ours, without --backend s3")

    tools = {"ours": ours_command, "reference": reference_command}
    chosen = [t.strip() for t in args.tools.split(",") if t.strip()]
    commands = {t: tools[t]() for t in chosen}
    s3_server, s3_endpoint = start_s3_server() if args.backend == "s3" else (None, "")
    if s3_server is not None:
        commands["ours-s3"] = ours_command()
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-", dir="/dev/shm" if args.seed else None))
    root.mkdir(parents=True, exist_ok=True)
    run_benchmark(args, commands, root, s3_server, s3_endpoint)  # removes root unless --dir or --keep


def run_benchmark(args: argparse.Namespace, commands: dict[str, list[str]], root: Path,
                  s3_server: subprocess.Popen[bytes] | None, s3_endpoint: str) -> None:
    """Start the upstream, run every tool's phases against it, check the mirrors, print the figures."""
    server_cmd = [sys.executable, str(HERE / "upstream.py"), args.corpus, "--scale", str(args.scale),
                  "--latency-ms", str(args.latency_ms)]
    if args.display_names:
        server_cmd.append("--display-names")
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True)
    banner = server.stdout.readline().split() if server.stdout else []
    master = f"http://127.0.0.1:{banner[1]}"
    print(f"corpus {args.corpus}: {banner[3]} projects, {banner[5]} files; workers {args.workers}; "
          f"latency {args.latency_ms:g} ms; mirrors in {root}")
    machine = machine_limits(root, master) if args.corpus == "b" else {}

    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for tool, cmd in commands.items():
            directory = root / tool
            shutil.rmtree(directory, ignore_errors=True)
            conf = root / f"{tool}.conf"
            s3 = s3_endpoint if tool == "ours-s3" else ""
            write_config(conf, directory / "mirror", master, args.workers, tool, s3)
            results[tool] = {}
            phases = ("full", "10 changed", "no change")
            if args.seed:
                seeded = seed_mirror(cmd, conf, directory / "mirror", master, root / f"{tool}.log")
                print(f"  {tool:9} seeded     wall {seeded['wall']:8.2f}s for the sync of a sample of "
                      f"{seeded['sample']} projects and the root index  exit {seeded['exit']}", flush=True)
                phases = ("seeded no-op", "10 changed", "no change")
                before = state_mtimes(directory / "mirror")
            for phase in phases:
                if phase == "10 changed":
                    http_json(f"{master}/_change?n=10")
                http_json(f"{master}/_reset")
                s3_cpu = process_cpu(s3_server.pid) if s3 and s3_server is not None else 0.0
                run = timed_run([*cmd, "-c", str(conf), "mirror"], root / f"{tool}.log")
                stats = http_json(f"{master}/_stats")
                run.update(requests=stats["requests"], upstream_cpu=stats["cpu"])
                if s3 and s3_server is not None:
                    run["s3_server_cpu"] = process_cpu(s3_server.pid) - s3_cpu
                bound = ""
                if args.latency_ms:
                    run["bound"] = stats["requests"] * args.latency_ms / 1000 / args.workers
                    bound = f"  bound {run['bound']:6.2f}s ({run['wall'] / max(run['bound'], 1e-9):.2f}x)"
                results[tool][phase] = run
                if phase == "seeded no-op":
                    touched = [name for name, mtime in state_mtimes(directory / "mirror").items() if before.get(name) != mtime]
                    if run["requests"] != 1 or run["exit"] or touched:
                        raise SystemExit(f"the seeded mirror is not taken as up to date: {run['requests']} requests, "
                                         f"exit {run['exit']}, rewrote {touched or 'nothing'}; see {root / f'{tool}.log'}")
                print(f"  {tool:9} {phase:12}  wall {run['wall']:8.2f}s  cpu {run['cpu']:8.2f}s  "
                      f"rss {run['rss_mb']:7.1f}MB  requests {run['requests']:7d}  upstream cpu {run['upstream_cpu']:6.2f}s"
                      f"  exit {run['exit']}{bound}"
                      + (f"  s3 server cpu {run['s3_server_cpu']:6.2f}s" if "s3_server_cpu" in run else ""), flush=True)
            if s3:
                copy_bucket_out(s3_endpoint, tool, directory / "mirror")
            if args.seed:
                render = root_render(directory / "mirror")
                results[tool]["root index"] = render
                print(f"  {tool:9} root index of {render['projects']} projects from the records: load {render['load']:.2f}s, "
                      f"HTML {render['html']:.2f}s ({render['html_mb']:.1f} MB), JSON {render['json']:.2f}s "
                      f"({render['json_mb']:.1f} MB)", flush=True)
                continue  # pages for a sample only: the file-by-file check needs a full sync
            results[tool]["check"] = check_mirror(directory / "mirror", http_json(f"{master}/_manifest"))  # type: ignore[assignment]
            print(f"  {tool:9} mirror check: {results[tool]['check']}", flush=True)
    finally:
        server.terminate()
        if s3_server is not None:
            s3_server.terminate()
        if args.dir or args.keep:
            print(f"mirrors and logs left in {root}")
        else:  # a full corpus leaves hundreds of MB behind
            shutil.rmtree(root, ignore_errors=True)
            print(f"removed {root} (--keep or --dir keep it)")

    if "ours" in results and "reference" in results:
        print_ratios("ours / reference; below 1 is better", results["ours"], results["reference"], requests=True)
    if "ours" in results and "ours-s3" in results:
        print_ratios("ours-s3 / ours: the S3 backend against the filesystem backend", results["ours-s3"], results["ours"])
    if machine:
        print(f"machine limit: sha256 {machine['sha256_mbs']:.0f} MB/s, curl loopback to disk {machine['curl_mbs']:.0f} MB/s")
        for tool, runs in results.items():
            rate = machine["corpus_bytes"] / runs["full"]["wall"] / 1e6
            print(f"  {tool:9} full sync {rate:.0f} MB/s = {100 * rate / machine['curl_mbs']:.0f} % of the curl figure")
        results["machine"] = machine  # type: ignore[assignment]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def print_ratios(title: str, a: dict, b: dict, requests: bool = False) -> None:
    """Per phase, a's figures over b's."""
    print(f"ratios ({title}):")
    for phase in ("full", "10 changed", "no change"):
        o, r = a[phase], b[phase]
        line = (f"  {phase:10}  wall {o['wall'] / r['wall']:.2f}  cpu {o['cpu'] / max(r['cpu'], 1e-9):.2f}  "
                f"rss {o['rss_mb'] / max(r['rss_mb'], 1e-9):.2f}")
        if requests:
            line += f"  requests {o['requests'] / max(r['requests'], 1):.2f}"
        print(line)


def machine_limits(root: Path, master: str) -> dict[str, float]:
    """What this machine can do for corpus (b): sha256 throughput, and curl over loopback to disk."""
    block = os.urandom(64 << 20)
    start = time.perf_counter()
    for _ in range(8):
        hashlib.sha256(block).digest()
    sha = 8 * len(block) / (time.perf_counter() - start) / 1e6
    manifest = http_json(f"{master}/_manifest")
    files = [rel for rel in manifest["files"] if not rel.endswith(".metadata")][:10]  # type: ignore[index]
    target = root / "curl"
    target.mkdir(exist_ok=True)
    start = time.perf_counter()
    total = 0
    for index, rel in enumerate(files):
        out = target / f"f{index}"
        subprocess.run(["curl", "-s", "-o", str(out), f"{master}/{rel}"], check=True)
        total += out.stat().st_size
    curl = total / (time.perf_counter() - start) / 1e6
    shutil.rmtree(target)
    corpus_bytes = sum(total / len(files) for rel in manifest["files"] if not rel.endswith(".metadata"))  # type: ignore[union-attr]
    return {"sha256_mbs": sha, "curl_mbs": curl, "corpus_bytes": corpus_bytes}


if __name__ == "__main__":
    main()
