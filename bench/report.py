"""Results of one bench run: the derived numbers (latency added over the direct call, targets as
ratios), bench/results/latest.json, latest.md (the table), latest.png (the chart), and the
`<!-- bench:begin -->` ... `<!-- bench:end -->` section of bench/README.md and of README.md (when
it has those markers)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DASH = "\u2013"  # en dash: no value

# Targets of issues 8 and 20 / DESIGN.md "Performance".
THROUGHPUT_RATIO = 15.0
# llm-call CPU per request at c=32 over the floor's (same transport).
CALL_VS_FLOOR = 1.25
# create+call+complete on PostgreSQL: CPU per flow over the PostgreSQL llm-call's.
FLOW_VS_CALL = 3.0
ADDED_P50_MS = 1.0
FIRST_CHUNK_MS = 1.0
PER_CHUNK_US = 50.0
START_S = 2.0
RSS_MB = 150.0
# A run during which other processes used more than this many cores is flagged.
OTHERS_BUSY = 0.25
# The scenario name of GET /health/live (bench/run.py): what every call costs at least.
FLOOR = "empty call (floor)"
# The `via` of the OpenAI-compatible path (POST /v1/chat/completions through Envoy).
OPENAI_VIA = "OpenAI /v1"


def _floor_via(via: str) -> str:
    """The floor a row is compared with: native gRPC rows with the gRPC floor (no Envoy),
    everything through Envoy with the REST floor."""
    return "gRPC" if via == "gRPC" else "Envoy REST"


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _ok(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def derive(rows: list[dict[str, Any]]) -> None:
    """Latency added over the direct call with the same concurrency (and streaming or not)."""
    for row in rows:
        if row["system"] == "direct":
            continue
        base = _find(rows, system="direct", stream=row["stream"], concurrency=row["concurrency"])
        if base is None:
            continue
        row["added_p50_ms"] = round(row["p50_ms"] - base["p50_ms"], 3)
        row["added_p99_ms"] = round(row["p99_ms"] - base["p99_ms"], 3)
        if row["stream"]:
            row["added_first_chunk_p50_ms"] = round(
                row["first_chunk_p50_ms"] - base["first_chunk_p50_ms"], 3
            )
            row["added_per_chunk_us"] = round(
                row["chunk_interval_p50_us"] - base["chunk_interval_p50_us"], 1
            )
    # How far above the floor each gateway row is, in CPU per request (same concurrency and
    # transport; the floor touches no database, so the PostgreSQL rows use the same floor).
    for row in rows:
        if not str(row["system"]).startswith("gateway") or not row.get("cpu_ms_per_req"):
            continue
        floor = _find(
            rows,
            system="gateway",
            scenario=FLOOR,
            via=_floor_via(row["via"]),
            concurrency=row["concurrency"],
        )
        if floor and floor.get("cpu_ms_per_req_total") and floor is not row:
            row["cpu_vs_floor"] = round(
                row["cpu_ms_per_req_total"] / floor["cpu_ms_per_req_total"], 2
            )


def targets(meta: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(
        name: str, value: float | None, limit: float, unit: str, *, higher: bool, how: str
    ) -> None:
        if value is None or math.isnan(value):
            value = None
        met = None if value is None else (value >= limit if higher else value <= limit)
        out.append(
            {
                "target": name,
                "value": None if value is None else round(value, 3),
                "limit": limit,
                "higher": higher,
                "unit": unit,
                "met": met,
                "how": how,
            }
        )

    ours = _find(rows, system="gateway", scenario="llm-call", via="Envoy REST", concurrency=32)
    ours_grpc = _find(rows, system="gateway", scenario="llm-call", via="gRPC", concurrency=32)
    lite = _find(rows, system="litellm", scenario="llm-call", concurrency=32)
    pairs = [p for p in meta.get("pairs") or [] if p.get("ratio")]
    if pairs:
        add(
            "llm-call throughput vs LiteLLM proxy (Envoy REST, c=32, paired rounds)",
            statistics.median(p["ratio"] for p in pairs),
            THROUGHPUT_RATIO,
            "x",
            higher=True,
            how="median over rounds of gateway RPS / LiteLLM proxy RPS measured back to back",
        )
    ratio = ours["rps"] / lite["rps"] if ours and lite and lite["rps"] else None
    add(
        "llm-call throughput vs LiteLLM proxy (Envoy REST, c=32, main runs)",
        ratio,
        THROUGHPUT_RATIO,
        "x",
        higher=True,
        how="gateway RPS / LiteLLM proxy RPS of the scenario table"
        + ("" if lite else f" (LiteLLM unavailable: {meta.get('litellm_unavailable')})"),
    )
    if ours_grpc and lite and lite["rps"]:
        add(
            "llm-call throughput vs LiteLLM proxy (gRPC, c=32)",
            ours_grpc["rps"] / lite["rps"],
            THROUGHPUT_RATIO,
            "x",
            higher=True,
            how="gateway RPS / LiteLLM proxy RPS",
        )
    cpu_pairs = [p for p in pairs if p.get("cpu_ratio")]
    if cpu_pairs:
        add(
            "CPU per llm-call vs LiteLLM proxy (c=32, paired rounds)",
            statistics.median(p["cpu_ratio"] for p in cpu_pairs),
            THROUGHPUT_RATIO,
            "x",
            higher=True,
            how="LiteLLM proxy CPU ms/req / (service + Envoy) CPU ms/req, median over rounds",
        )
    elif ours and lite and ours.get("cpu_ms_per_req_total"):
        add(
            "CPU per llm-call vs LiteLLM proxy (c=32)",
            lite["cpu_ms_per_req_total"] / ours["cpu_ms_per_req_total"],
            THROUGHPUT_RATIO,
            "x",
            higher=True,
            how="LiteLLM proxy CPU ms/req / (service + Envoy) CPU ms/req",
        )
    add(
        "llm-call CPU per request vs the floor's (Envoy REST, c=32)",
        ours.get("cpu_vs_floor") if ours else None,
        CALL_VS_FLOOR,
        "x",
        higher=False,
        how="(service + Envoy) CPU ms/req of the llm-call / of the empty call (GET /health/live)",
    )
    pg_call = _find(
        rows, system="gateway/pg", scenario="llm-call", via="Envoy REST", concurrency=32
    )
    pg_flow = _find(
        rows, system="gateway/pg", scenario="create+call+complete", via="Envoy REST", concurrency=32
    )
    add(
        "create+call+complete CPU vs llm-call CPU (PostgreSQL, Envoy REST, c=32)",
        pg_flow["cpu_ms_per_req_total"] / pg_call["cpu_ms_per_req_total"]
        if pg_flow and pg_call and pg_call.get("cpu_ms_per_req_total")
        else None,
        FLOW_VS_CALL,
        "x",
        higher=False,
        how="CPU per flow (3 requests) / CPU per llm-call, both on PostgreSQL",
    )
    c1 = _find(rows, system="gateway", scenario="llm-call", via="Envoy REST", concurrency=1)
    add(
        "added p50 latency, llm-call Envoy REST, c=1",
        c1.get("added_p50_ms") if c1 else None,
        ADDED_P50_MS,
        "ms",
        higher=False,
        how="p50 through Envoy + service - p50 of the direct call",
    )
    st = _find(rows, system="gateway", scenario="llm-call-stream", via="Envoy REST", concurrency=1)
    add(
        "stream first-chunk overhead, Envoy REST, c=1",
        st.get("added_first_chunk_p50_ms") if st else None,
        FIRST_CHUNK_MS,
        "ms",
        higher=False,
        how="p50 time to first chunk through the gateway - direct",
    )
    add(
        "stream per-chunk overhead, Envoy REST, c=1",
        st.get("added_per_chunk_us") if st else None,
        PER_CHUNK_US,
        "µs",
        higher=False,
        how="p50 time between chunks through the gateway - direct "
        "(upstream sends the chunks back to back)",
    )
    starts = meta.get("starts", {})
    add(
        "service start (spawn to gRPC health SERVING)",
        starts.get("service_sqlite_s"),
        START_S,
        "s",
        higher=False,
        how="`python -m service serve` on SQLite, wall clock",
    )
    rss = [
        r["peak_rss_mb"]["service"]
        for r in rows
        if r["system"].startswith("gateway") and "service" in r.get("peak_rss_mb", {})
    ]
    add(
        "peak RSS per service process",
        max(rss) if rss else None,
        RSS_MB,
        "MB",
        higher=False,
        how="VmHWM of the service process after all its scenarios",
    )
    return out


def build(meta: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    derive(rows)
    return {"meta": meta, "targets": targets(meta, rows), "results": rows}


# Rendering ---------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _signed(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:+.{digits}f}"


def _system(row: dict[str, Any]) -> str:
    system = str(row["system"])
    if system == "direct":
        return "upstream direct"
    if system == "litellm":
        return "LiteLLM proxy"
    db = row.get("database", "")
    return f"gateway ({'PostgreSQL' if db.startswith('postgres') else 'SQLite'})"


def _cpu(row: dict[str, Any]) -> str:
    cpu = row.get("cpu_ms_per_req") or {}
    if not cpu:
        return DASH
    if len(cpu) == 1:
        return _f(next(iter(cpu.values())), 3)
    parts = " + ".join(_f(cpu[k], 3) for k in ("service", "envoy") if k in cpu)
    return f"{_f(row['cpu_ms_per_req_total'], 3)} ({parts})"


def _rss(row: dict[str, Any]) -> str:
    rss = row.get("peak_rss_mb") or {}
    if not rss:
        return DASH
    return " / ".join(_f(v, 0) for v in rss.values())


def table(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    lines = [
        "| System | Scenario | Via | c | RPS | p50 ms | p99 ms | +p50 ms | +p99 ms "
        "| CPU ms/req (svc + Envoy) | x floor | 1st chunk ms (+) | per chunk µs (+) | peak RSS MB "
        "| err |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in doc["results"]:
        first = chunk = DASH
        if r["stream"]:
            added_first = _signed(r.get("added_first_chunk_p50_ms"), 3)
            added_chunk = _signed(r.get("added_per_chunk_us"), 1)
            first = f"{_f(r['first_chunk_p50_ms'], 3)} ({added_first})"
            chunk = f"{_f(r['chunk_interval_p50_us'], 1)} ({added_chunk})"
        busy = " ‡" if r.get("other_cpu_cores", 0) > OTHERS_BUSY else ""
        lines.append(
            f"| {_system(r)} | {r['scenario']} | {r['via']} | {r['concurrency']} "
            f"| {_f(r['rps'], 0)}{busy} | {_f(r['p50_ms'], 3)} | {_f(r['p99_ms'], 3)} "
            f"| {_signed(r.get('added_p50_ms'), 3)} | {_signed(r.get('added_p99_ms'), 3)} "
            f"| {_cpu(r)} | {_f(r.get('cpu_vs_floor'), 2)} | {first} | {chunk} | {_rss(r)} "
            f"| {r['errors']} |"
        )
    if any(r.get("other_cpu_cores", 0) > OTHERS_BUSY for r in doc["results"]):
        lines += [
            "",
            f"‡ other processes on the machine used more than {OTHERS_BUSY} of a core during "
            "that run (`other_cpu_cores` in the JSON): its numbers are pessimistic.",
        ]
    lines += ["", targets_table(doc)]
    floor = floor_line(doc)
    if floor:
        lines += ["", floor]
    starts = meta.get("starts", {})
    lines += [
        "",
        "Start (spawn to ready): "
        + ", ".join(
            f"{k.removesuffix('_s').replace('_', ' ')} {v:.2f} s" for k, v in starts.items()
        ),
    ]
    pairs = meta.get("pairs") or []
    if pairs:
        lines.append(
            "Paired rounds, back to back (gateway llm-call via Envoy REST vs LiteLLM proxy, c=32): "
            + "; ".join(
                f"{_f(p['gateway_rps'], 0)} vs {_f(p['litellm_rps'], 0)} RPS = {_f(p['ratio'])}x, "
                f"CPU {_f(p['gateway_cpu_ms_per_req'], 3)} vs {_f(p['litellm_cpu_ms_per_req'], 3)}"
                " ms/req"
                for p in pairs
            )
        )
    for module, extra in (meta.get("extras") or {}).items():
        if "error" in extra:
            lines.append(f"`{module}`: failed: {extra['error']}")
        else:
            met = extra.get("met")
            verdict = "" if met is None else (" (met)" if met else " (**missed**)")
            lines.append(
                f"`{module}`: {extra.get('scenario', module)}: p50 {extra.get('p50_ms')} ms, "
                f"p99 {extra.get('p99_ms')} ms, target < {extra.get('target_ms')} ms{verdict}"
            )
    if meta.get("litellm_unavailable"):
        lines.append(f"LiteLLM proxy baseline unavailable: {meta['litellm_unavailable']}")
    for note in meta.get("notes", []):
        lines.append(f"Note: {note}")
    host = meta.get("host", {})
    lines.append(
        f"Run {meta.get('started_at')}, {host.get('cpus')} CPUs, Python {host.get('python')}, "
        f"LiteLLM {meta.get('litellm_version')}, {meta.get('stream_chunks')} chunks per stream, "
        f"bench runtime {meta.get('runtime_s')} s"
        + (" (--quick)" if meta.get("quick") else "")
        + ". "
        + _pinning(meta)
    )
    return "\n".join(lines)


def _pinning(meta: dict[str, Any]) -> str:
    pin = meta.get("pinning") or {}
    if "gateway_cpus" in pin:
        return (
            f"Pinned: the gateway (service + Envoy, or the LiteLLM proxy) on CPU "
            f"{','.join(map(str, pin['gateway_cpus']))}, the load generator and the upstream on "
            f"CPU {','.join(map(str, pin['load_cpus']))}."
        )
    return f"Not pinned ({pin.get('off', 'unknown')}): the load generator shares the CPUs."


def floor_line(doc: dict[str, Any]) -> str | None:
    """How much of the llm-call's added latency is the floor: the same trip through Envoy and
    grpc.aio to a handler that does nothing (GET /health/live)."""
    rows = doc["results"]
    floor = _find(rows, system="gateway", scenario=FLOOR, via="Envoy REST", concurrency=1)
    call = _find(rows, system="gateway", scenario="llm-call", via="Envoy REST", concurrency=1)
    if not floor or not call or not _ok(floor.get("added_p50_ms")):
        return None
    return (
        f"Floor, c=1: an empty call through Envoy REST (`GET /health/live`: no key, no database, "
        f"no upstream) adds {_f(floor['added_p50_ms'], 3)} ms at p50 and costs "
        f"{_f(floor.get('cpu_ms_per_req_total'), 3)} ms of CPU (service + Envoy); the llm-call "
        f"adds {_f(call.get('added_p50_ms'), 3)} ms and costs "
        f"{_f(call.get('cpu_ms_per_req_total'), 3)} ms. The floor crosses the transcoder and "
        "grpc.aio; the llm-call through Envoy goes to the service's HTTP handler instead "
        "(src/service/api/rest_rpcs.py), so their difference is the call's own work (key, job, "
        "upstream exchange, record) minus what that way saves."
    )


def targets_table(doc: dict[str, Any]) -> str:
    lines = ["| Target | Measured | Limit | Met |", "|---|--:|--:|:-:|"]
    for t in doc["targets"]:
        unit = t["unit"]
        cmp = "≥" if t.get("higher", unit == "x") else "≤"
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(
            f"| {t['target']} | {_f(t['value'], 2)} {unit} | {cmp} {t['limit']:g} {unit} | {met} |"
        )
    return "\n".join(lines)


def summary(doc: dict[str, Any]) -> str:
    """The short version for the top-level README: key rows and the targets."""
    keep = [
        r
        for r in doc["results"]
        if r["scenario"] in (FLOOR, "llm-call", "llm-call-stream")
        and (r["via"] in ("Envoy REST", "proxy", "HTTP", OPENAI_VIA))
        and r["system"] in ("direct", "litellm", "gateway")
    ]
    lines = [
        "| System | Scenario | c | RPS | p50 ms | +p50 ms | CPU ms/req | 1st chunk + ms "
        "| per chunk + µs |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in keep:
        lines.append(
            f"| {_system(r)} | {r['scenario']} | {r['concurrency']} | {_f(r['rps'], 0)} "
            f"| {_f(r['p50_ms'], 3)} | {_signed(r.get('added_p50_ms'), 3)} "
            f"| {_f(r.get('cpu_ms_per_req_total') if r.get('cpu_ms_per_req') else None, 3)} "
            f"| {_signed(r.get('added_first_chunk_p50_ms'), 3)} "
            f"| {_signed(r.get('added_per_chunk_us'), 1)} |"
        )
    meta = doc["meta"]
    host = meta.get("host", {})
    floor = floor_line(doc)
    return (
        "\n".join(lines)
        + "\n\n"
        + targets_table(doc)
        + (f"\n\n{floor}" if floor else "")
        + f"\n\nRun {meta.get('started_at')} on {host.get('cpus')} CPUs. {_pinning(meta)} "
        "Every scenario and the definitions: [bench/README.md](bench/README.md)."
    )


def chart(doc: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = doc["results"]

    def label(r: dict[str, Any]) -> str:
        if r["system"] == "direct":
            who = "direct"
        elif r["system"] == "litellm":
            who = "LiteLLM"
        else:
            who = "PG" if str(r.get("database", "")).startswith("postgres") else "SQLite"
        via = {"Envoy REST": "REST", "proxy": "", "HTTP": ""}.get(r["via"], r["via"])
        scenario = str(r["scenario"]).replace("create+call+complete", "flow")
        scenario = scenario.replace(FLOOR, "floor")
        return f"{who} {scenario} {via}".strip()

    def color(r: dict[str, Any]) -> str:
        return {"direct": "#999999", "litellm": "#d62728"}.get(r["system"], "#1f77b4")

    c32 = [r for r in rows if r["concurrency"] == 32 and not r["stream"]]
    c1 = [r for r in rows if r["concurrency"] == 1 and r["system"] != "direct"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.5))
    ax = axes[0]
    ax.barh([label(r) for r in c32], [r["rps"] for r in c32], color=[color(r) for r in c32])
    ax.set_xscale("log")
    ax.set_title("Throughput, concurrency 32 (requests/s, log)")
    for i, r in enumerate(c32):
        ax.text(r["rps"], i, f" {r['rps']:.0f}", va="center", fontsize=8)
    ax.invert_yaxis()

    cpu_rows = [r for r in c32 if r.get("cpu_ms_per_req")]
    ax = axes[1]
    ax.barh(
        [label(r) for r in cpu_rows],
        [r["cpu_ms_per_req_total"] for r in cpu_rows],
        color=[color(r) for r in cpu_rows],
    )
    ax.set_title("CPU ms per request, concurrency 32 (gateway: service + Envoy)")
    for i, r in enumerate(cpu_rows):
        ax.text(
            r["cpu_ms_per_req_total"],
            i,
            f" {r['cpu_ms_per_req_total']:.2f}",
            va="center",
            fontsize=8,
        )
    ax.invert_yaxis()

    ax = axes[2]
    added = [r for r in c1 if _ok(r.get("added_p50_ms"))]
    ax.barh(
        [label(r) for r in added],
        [r["added_p50_ms"] for r in added],
        color=[color(r) for r in added],
    )
    ax.axvline(ADDED_P50_MS, color="black", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_title("Added p50 latency, concurrency 1 (ms, log)")
    for i, r in enumerate(added):
        ax.text(r["added_p50_ms"], i, f" {r['added_p50_ms']:.2f}", va="center", fontsize=8)
    ax.invert_yaxis()
    for ax in axes:
        ax.tick_params(axis="y", labelsize=8)
    meta = doc["meta"]
    fig.suptitle(f"make bench, {meta.get('started_at')} ({meta['host']['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _splice(path: Path, block: str) -> bool:
    if not path.exists():
        return False
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return False
    path.write_text(text[: start + len(BEGIN)] + "\n" + block + "\n" + text[end:])
    return True


def write(doc: dict[str, Any], results: Path, *, png: bool = True) -> dict[str, Any]:
    results.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    json_path = results / "latest.json"
    json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    files.append(json_path)
    text = table(doc)
    md_path = results / "latest.md"
    md_path.write_text("# make bench: latest results\n\n![chart](latest.png)\n\n" + text + "\n")
    files.append(md_path)
    if png:
        png_path = results / "latest.png"
        if chart(doc, png_path):
            files.append(png_path)
        else:
            doc["meta"]["notes"].append("matplotlib missing: no chart")
    blocks = (
        (ROOT / "bench" / "README.md", f"![bench chart](results/latest.png)\n\n{text}"),
        (ROOT / "README.md", f"![bench chart](bench/results/latest.png)\n\n{summary(doc)}"),
    )
    for readme, block in blocks:
        if _splice(readme, block):
            files.append(readme)
    return {"table": text, "files": files}
