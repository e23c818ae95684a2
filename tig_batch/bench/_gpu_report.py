"""What ``bench gpu`` reports: the goals read off its steps, and the Markdown page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tig_batch.bench.gpu import Check, Goal

KERNEL_SPEEDUP, PEAK_FRACTION, CAPTUM_RATIO = 2.0, 0.70, 3.0


def _largest_cases(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each (op, dtype)'s case that moves the most bytes: where bandwidth is what counts."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["op"], row["dtype"])
        if key not in best or row["bytes_moved"] > best[key]["bytes_moved"]:
            best[key] = row
    return list(best.values())


def _kernel_goals(data: dict[str, Any]) -> list[Goal]:
    from tig_batch.bench.gpu import Goal

    rows = data.get("rows", [])
    texts = (
        (f"kernels >= {KERNEL_SPEEDUP:g}x their torch twins", "speedup", KERNEL_SPEEDUP, "x"),
        (f"kernels >= {PEAK_FRACTION:.0%} of peak bandwidth", "peak_fraction", PEAK_FRACTION, ""),
    )
    if not data.get("kernels_timed") or not rows:
        return [Goal(goal, "not measured (no kernel timings)", None) for goal, *_ in texts]
    goals = []
    for goal, key, target, unit in texts:
        largest = [r for r in _largest_cases(rows) if r.get(key) is not None]
        if not largest:
            goals.append(Goal(goal, "not measured", None))
            continue
        worst = min(largest, key=lambda r: r[key])
        meeting = sum(1 for r in rows if (r.get(key) or 0) >= target)
        value = f"{worst[key]:.2f}x" if unit else f"{worst[key]:.0%}"
        measured = (
            f"lowest at each kernel's largest case: {value} ({worst['op']}, {worst['image']}, "
            f"{worst['dtype']}); {meeting} of {len(rows)} cases meet it"
        )
        goals.append(Goal(goal, measured, all(r[key] >= target for r in largest)))
    return goals


def _explain_goal(check: Check) -> Goal:
    from tig_batch.bench.gpu import Goal

    goal = "explain on the device equals the CPU run within the stated tolerances"
    status, data = (
        check.status("explain: device against cpu"),
        check.data("explain: device against cpu"),
    )
    compared = data.get("backends", {})
    if status is None or (not compared and not data.get("failures")):
        return Goal(goal, "not compared", None)
    parts = []
    for backend, result in compared.items():
        rows = result["rows"]
        parts.append(f"{backend}: {sum(r['passed'] for r in rows)} of {len(rows)} datasets")
    parts += [f"{backend}: {why}" for backend, why in data.get("failures", {}).items()]
    return Goal(goal, "; ".join(parts), status == "ok")


def _captum_goal(check: Check) -> Goal:
    from tig_batch.bench.gpu import Goal

    goal = f"plain IG >= {CAPTUM_RATIO:g}x Captum on the same GPU"
    rows = [r for r in check.data("captum on the device").get("rows", []) if r["name"] != "Captum"]
    if not rows:
        return Goal(goal, "not measured", None)
    best = max(rows, key=lambda r: r["ratio_to_captum"])
    others = ", ".join(f"{r['name']} {r['ratio_to_captum']:.2f}x" for r in rows)
    on_gpu = check.settings.device.startswith("cuda")
    measured = f"{best['name']}: {best['ratio_to_captum']:.2f}x ({others})" + (
        "" if on_gpu else f"; on {check.settings.device}, not a GPU"
    )
    return Goal(goal, measured, best["ratio_to_captum"] >= CAPTUM_RATIO if on_gpu else None)


def goals(check: Check) -> list[Goal]:
    """The issue's goals for the first GPU run, from whatever the steps measured so far."""
    return [
        *_kernel_goals(check.data("kernel benchmark")),
        _explain_goal(check),
        _captum_goal(check),
    ]


# ------------------------------------------------------------------------------ Markdown


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in report["steps"]}


def _environment_lines(data: dict[str, Any]) -> list[str]:
    lines = [f"- {key}: {value}" for key, value in data.items() if key not in ("install",)]
    for item in data.get("install", []) if isinstance(data.get("install"), list) else []:
        lines.append(
            f"- install {item.get('what')}: {item.get('status')} ({item.get('detail', '')})"
        )
    return ["## Environment", "", *lines, ""]


def _kernel_lines(steps: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    diff_rows = steps.get("kernel correctness", {}).get("data", {}).get("rows", [])
    if diff_rows:
        out += ["## Kernels against their torch twins", ""]
        out += _table(
            ["op", "image", "dtype", "K", "r", "max abs diff", "max rel diff", "tolerance", "ok",
             "error"],
            [
                [r["op"], r["image"], r["dtype"], _fmt(r["n_steps"]), _fmt(r["rank"]),
                 _fmt(r["max_abs_diff"], ".1e"), _fmt(r["max_rel_diff"], ".1e"),
                 _fmt(r["tolerance"], ".0e"), _fmt(r["passed"]),
                 (r.get("error") or "").splitlines()[0][:160] if r.get("error") else ""]
                for r in diff_rows
            ],
        )  # fmt: skip
    bench = steps.get("kernel benchmark", {}).get("data", {})
    if bench.get("rows"):
        out += [
            "## Kernel benchmark",
            "",
            f"Peak bandwidth: {_fmt(bench.get('peak_gbps'), '.0f')} GB/s.",
            "",
        ]
        out += _table(
            ["op", "image", "dtype", "K", "r", "MB", "torch ms", "GB/s", "triton ms", "GB/s",
             "speed-up", "% peak"],
            [
                [r["op"], r["image"], r["dtype"], _fmt(r["n_steps"]), _fmt(r["rank"]),
                 f"{r['bytes_moved'] / 1e6:.1f}", f"{r['torch_ms']:.3f}", f"{r['torch_gbps']:.1f}",
                 _fmt(r["triton_ms"], ".3f"), _fmt(r["triton_gbps"], ".1f"),
                 _fmt(r["speedup"], ".2f"),
                 _fmt(None if r["peak_fraction"] is None else 100 * r["peak_fraction"], ".0f")]
                for r in bench["rows"]
            ],
        )  # fmt: skip
    return out


def _explain_lines(steps: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    runs = steps.get("explain on the device", {}).get("data", {}).get("runs", {})
    rates = steps.get("throughput on the device", {}).get("data", {}).get("images_per_s", {})
    if runs or rates:
        out += ["## Explain on the device", ""]
        out += _table(
            ["backend", "end to end, s", "images/s (with start-up)", "plain IG images/s",
             "tangential IG images/s"],
            [
                [b, _fmt(runs.get(b, {}).get("seconds"), ".1f"),
                 _fmt(runs.get(b, {}).get("images_per_s_with_start"), ".1f"),
                 _fmt(rates.get(b, {}).get("zero"), ".1f"),
                 _fmt(rates.get(b, {}).get("tangential"), ".1f")]
                for b in sorted(set(runs) | set(rates))
            ],
        )  # fmt: skip
    captum = steps.get("captum on the device", {}).get("data", {}).get("rows", [])
    if captum:
        out += ["## Plain IG against Captum on the device", ""]
        out += _table(
            ["contender", "best internal batch", "images/s", "x Captum", "max rel diff"],
            [
                [r["name"], str(r["internal_batch_size"]), f"{r['images_per_s']:.1f}",
                 f"{r['ratio_to_captum']:.2f}", f"{r['max_rel_diff']:.1e}"]
                for r in captum
            ],
        )  # fmt: skip
    compared = steps.get("explain: device against cpu", {}).get("data", {}).get("backends", {})
    for backend, result in compared.items():
        out += [f"## Explain, {backend} backend: device against CPU", ""]
        out += _table(
            ["dataset", "images agreeing", "within", "max rel diff", "mean mu diff", "ok"],
            [
                [r["dataset"], f"{_fmt(r.get('agreeing'))} of {_fmt(r.get('images'))}",
                 f"{_fmt(r['rel'], '.0e') if r['rel'] else 'equal'} ({r['share']:.0%})",
                 _fmt(r.get("max_rel_diff"), ".1e"),
                 _fmt(r.get("mean_mu_diff"), ".1e"), _fmt(r["passed"])]
                for r in result["rows"]
            ],
        )  # fmt: skip
    return out


def to_markdown(report: dict[str, Any]) -> str:
    """The report as one Markdown page: steps, goals, then each step's tables."""
    steps = _steps(report)
    lines = [f"# GPU check ({report['written_at']})", "", "## Steps", ""]
    lines += _table(
        ["step", "status", "seconds", "note"],
        [
            [s["name"], s["status"], f"{s['seconds']:.1f}",
             (s["error"] or "").splitlines()[0][:200] if s["error"] else ""]
            for s in report["steps"]
        ],
    )  # fmt: skip
    lines += ["## Goals", ""]
    lines += _table(
        ["goal", "measured", "met"],
        [[g["goal"], g["measured"], _fmt(g["met"])] for g in report["goals"]],
    )  # fmt: skip
    lines += _environment_lines(steps.get("environment", {}).get("data", {}))
    lines += _kernel_lines(steps) + _explain_lines(steps)
    traces = [
        (s["name"], s["data"]["traceback"]) for s in report["steps"] if "traceback" in s["data"]
    ]
    for name, trace in traces:
        lines += [f"## Traceback: {name}", "", "```", trace.rstrip(), "```", ""]
    return "\n".join(lines)
