"""Claims of the 1D study (paper §IV.A, and the §II baselines), each a
:class:`~coordgate.claims.Rule` judged from the model rows of the results.

The rules compare median PSNRs over seeds against the study's ``negligible_db`` criterion;
a claim made of several pairs combines their verdicts with
:func:`~coordgate.claims.combine_verdicts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from coordgate.claims import Rule, combine_verdicts
from coordgate.report import Claim

__all__ = ["claims", "judge", "psnr_text"]

Row = Mapping[str, object]
Check = Callable[[Sequence[Row], float], tuple[str, str]]

# How combine_verdicts makes one verdict of several pairs whose verdicts are supported,
# partly supported or not supported (the only ones these rules give).
_COMBINED = "overall supported if all are, not supported if all are not, partly supported otherwise"


def psnr_text(row: Row) -> str:
    """A model's name with its median PSNR and range over seeds."""
    return (
        f"{row['name']} {row['psnr_median']:.2f} dB [{row['psnr_min']:.2f}, {row['psnr_max']:.2f}]"
    )


def _conv_key(row: Row) -> str:
    return f"({row['layers']},{row['kernel']},{row['channels']})"


def _untestable(needs: str) -> tuple[str, str]:
    return "inconclusive", f"not testable with this preset: needs {needs}."


def _coordgate(rows: Sequence[Row], negligible_db: float) -> tuple[str, str]:
    """(1) a one-layer CG beats every CNN/CCNN in PSNR with fewer params, less time."""
    cgs = [r for r in rows if r["family"] == "cg" and r["layers"] == 1]
    convs = [r for r in rows if r["family"] in ("cnn", "ccnn")]
    deep = [r for r in convs if r["layers"] > 1]
    if not cgs or not deep:
        return _untestable("a CG(1,k,c,p) and a multi-layer CNN/CCNN")
    best_conv = max(convs, key=lambda r: r["psnr_median"])
    winners = [r for r in cgs if all(r["psnr_median"] > c["psnr_max"] for c in convs)]
    # The cheapest CG that beats every CNN/CCNN is the paper's point; else the best CG.
    cg = (
        min(winners, key=lambda r: r["params"])
        if winners
        else max(cgs, key=lambda r: r["psnr_median"])
    )
    fewer = cg["params"] < best_conv["params"]
    faster = cg["infer_ms"] < best_conv["infer_ms"]
    beaten = sum(cg["psnr_median"] > c["psnr_max"] for c in convs)
    margin = cg["psnr_median"] - best_conv["psnr_median"]
    cheaper = [c for c in convs if c["params"] <= cg["params"] or c["infer_ms"] <= cg["infer_ms"]]
    evidence = (
        f"{psnr_text(cg)} with {cg['params']} parameters and {cg['infer_ms']:.3f} ms; the best "
        f"CNN/CCNN is {psnr_text(best_conv)} with {best_conv['params']} parameters and "
        f"{best_conv['infer_ms']:.3f} ms: a margin of {margin:+.2f} dB with "
        f"{best_conv['params'] / cg['params']:.1f}x fewer parameters and "
        f"{best_conv['infer_ms'] / cg['infer_ms']:.1f}x less time. {cg['name']}'s median beats "
        f"the best seed of {beaten} of {len(convs)} CNN/CCNN models. "
        + (
            "CNN/CCNN models as small or as fast as it reach at most "
            f"{max(c['psnr_max'] for c in cheaper):.2f} dB ("
            + ", ".join(c["name"] for c in cheaper)
            + ")."
            if cheaper
            else "Every CNN/CCNN is both larger and slower."
        )
    )
    if winners and fewer and faster:
        return "supported", evidence
    if winners or (fewer and faster and margin > -negligible_db):
        return "partly supported", evidence
    return "not supported", evidence


def _coordconv(rows: Sequence[Row], negligible_db: float) -> tuple[str, str]:
    """(2) CCNN(L,k,c) is no better than CNN(L,k,c)."""
    cnns = {_conv_key(r): r for r in rows if r["family"] == "cnn"}
    pairs = [
        (r, cnns[_conv_key(r)]) for r in rows if r["family"] == "ccnn" and _conv_key(r) in cnns
    ]
    if not pairs:
        return _untestable("a CCNN(L,k,c) and the CNN(L,k,c) of the same shape")
    gains = [cc["psnr_median"] - cnn["psnr_median"] for cc, cnn in pairs]
    evidence = "; ".join(
        f"{cc['name']} vs {cnn['name']}: {gain:+.2f} dB "
        f"({cc['psnr_median']:.2f} vs {cnn['psnr_median']:.2f})"
        for (cc, cnn), gain in zip(pairs, gains)
    )
    verdicts = ["supported" if g < negligible_db else "not supported" for g in gains]
    return combine_verdicts(verdicts), evidence + "."


def _random_pair(rand: Row, twin: Row, base: Row | None, negligible_db: float) -> tuple[str, str]:
    """One CG-random against its CG twin and the single convolution CNN(1,k,1)."""
    text = f"{psnr_text(rand)} vs {psnr_text(twin)}"
    far = False
    if base is not None:
        gap = twin["psnr_median"] - base["psnr_median"]
        share = (rand["psnr_median"] - base["psnr_median"]) / gap if gap > 0 else 1.0
        text += (
            f" and the single convolution {psnr_text(base)}: the random input recovers "
            f"{100 * share:.0f}% of the gain coordinates give"
        )
        far = share < 0.5
    text += f"; runs that failed / hit the epoch cap: {rand['failed_runs']} / {rand['capped_runs']}"
    if far:
        return "supported", text
    if rand["psnr_median"] < twin["psnr_median"] - negligible_db:
        return "partly supported", text
    return "not supported", text


def _random_input(rows: Sequence[Row], negligible_db: float) -> tuple[str, str]:
    """(3) CG with U(-1,1) random numbers as static input does not converge."""
    by_name = {r["name"]: r for r in rows}
    judged = [
        _random_pair(rand, twin, by_name.get(f"CNN(1,{rand['kernel']},1)"), negligible_db)
        for rand in rows
        if rand["family"] == "cg-random"
        and (twin := by_name.get(rand["name"].replace("CG-random", "CG"))) is not None
    ]
    if not judged:
        return _untestable("a CG-random(L,k,c,p) and its CG(L,k,c,p) twin")
    return combine_verdicts([v for v, _ in judged]), "; ".join(t for _, t in judged) + "."


def _channels(rows: Sequence[Row], negligible_db: float) -> tuple[str, str]:
    """(4) more channels do not help a CNN (same L and k)."""
    cnns = [r for r in rows if r["family"] == "cnn" and r["layers"] > 1]
    pairs = [
        (a, b)
        for a in cnns
        for b in cnns
        if (a["layers"], a["kernel"]) == (b["layers"], b["kernel"])
        and a["channels"] < b["channels"]
    ]
    if not pairs:
        return _untestable("two CNN(L,k,c) differing only in c")
    gains = [b["psnr_median"] - a["psnr_median"] for a, b in pairs]
    evidence = "; ".join(
        f"{b['name']} vs {a['name']}: {gain:+.2f} dB ({b['params']} vs {a['params']} parameters)"
        for (a, b), gain in zip(pairs, gains)
    )
    verdicts = ["supported" if g < negligible_db else "not supported" for g in gains]
    return combine_verdicts(verdicts), evidence + "."


def _depth_chain(chain: Sequence[Row], negligible_db: float) -> str:
    steps = [b["psnr_median"] - a["psnr_median"] for a, b in zip(chain, chain[1:])]
    if all(s > 0 for s in steps):
        return "supported"
    if chain[-1]["psnr_median"] > chain[0]["psnr_median"] + negligible_db:
        return "partly supported"
    return "not supported"


def _depth(rows: Sequence[Row], negligible_db: float) -> tuple[str, str]:
    """(5) a CNN's PSNR rises with depth, as the padding defect reaches further inwards."""
    chains = []
    for kernel in sorted({r["kernel"] for r in rows if r["family"] == "cnn"}):
        chain = sorted(
            (
                r
                for r in rows
                if r["family"] == "cnn"
                and r["kernel"] == kernel
                and (r["layers"] == 1 or r["channels"] == 4)
            ),
            key=lambda r: r["layers"],
        )
        if len(chain) >= 2:
            chains.append(chain)
    if not chains:
        return _untestable("CNNs of one kernel size at two depths")
    verdicts = [_depth_chain(chain, negligible_db) for chain in chains]
    parts = [" → ".join(f"{r['name']} {r['psnr_median']:.2f}" for r in chain) for chain in chains]
    return combine_verdicts(verdicts), "; ".join(parts) + " (dB, medians)."


def _ratio(a: float, b: float, less: str, more: str) -> str:
    """``b / a`` as "N x less" or "N x more" from a's side."""
    return f"{b / a:.1f}x {less}" if a <= b else f"{a / b:.1f}x {more}"


def _relative_cost(a: Row, b: Row) -> str:
    """``a``'s parameters, inference and training CPU time relative to ``b``'s."""
    return (
        f"{_ratio(a['params'], b['params'], 'fewer', 'more')} parameters, "
        f"{_ratio(a['infer_ms'], b['infer_ms'], 'less', 'more')} inference time, "
        f"{_ratio(a['train_cpu_s'], b['train_cpu_s'], 'less', 'more')} training CPU time"
    )


def _lcn(rows: Sequence[Row], negligible_db: float) -> tuple[str, str]:
    """(6) a one-layer CG matches an LCN's accuracy with fewer parameters and less time."""
    lcns = [r for r in rows if r["family"] == "lcn"]
    cgs = [r for r in rows if r["family"] == "cg" and r["layers"] == 1]
    if not lcns or not cgs:
        return _untestable("an LCN(L,k) and a CG(1,k,c,p)")
    lcn = max(lcns, key=lambda r: r["psnr_median"])
    matching = [r for r in cgs if r["psnr_median"] >= lcn["psnr_median"] - negligible_db]
    cg = (
        min(matching, key=lambda r: r["params"])
        if matching
        else max(cgs, key=lambda r: r["psnr_median"])
    )
    cheaper = cg["params"] < lcn["params"] and cg["infer_ms"] < lcn["infer_ms"]
    evidence = (
        f"the best LCN is {psnr_text(lcn)} with {lcn['params']} parameters; "
        + ("the cheapest CG within " if matching else "no CG comes within ")
        + f"{negligible_db:g} dB of it"
        + (" is " if matching else "; the best CG is ")
        + f"{psnr_text(cg)} ({cg['psnr_median'] - lcn['psnr_median']:+.2f} dB) with "
        f"{_relative_cost(cg, lcn)} than the LCN. "
        + "".join(
            f"{psnr_text(r)}: {r['params']} parameters, {r['infer_ms']:.3f} ms. "
            for r in lcns
            if r is not lcn
        )
        + "Here H is itself a one-layer locally-connected operator on a frame of a few dozen "
        "samples, the LCN's best case; its parameters grow with the number of positions "
        "(the layer benchmark in benchmarks/results/layers.json measures 2D layers)."
    )
    if matching and cheaper:
        return "supported", evidence
    if matching or cheaper:
        return "partly supported", evidence
    return "not supported", evidence


def _pac(rows: Sequence[Row], negligible_db: float) -> tuple[str, str]:
    """(7) PAC's fixed pairwise form limits it: a one-layer CG beats every PAC, faster."""
    pacs = [r for r in rows if r["family"] == "pac"]
    cgs = [r for r in rows if r["family"] == "cg" and r["layers"] == 1]
    if not pacs or not cgs:
        return _untestable("a PAC(L,k,c) and a CG(1,k,c,p)")
    cnns = {_conv_key(r): r for r in rows if r["family"] == "cnn"}
    best_pac = max(pacs, key=lambda r: r["psnr_median"])
    cg = max(cgs, key=lambda r: r["psnr_median"])
    margin = cg["psnr_median"] - best_pac["psnr_median"]
    twins = [
        f"{r['name']} vs {cnns[_conv_key(r)]['name']}: "
        f"{r['psnr_median'] - cnns[_conv_key(r)]['psnr_median']:+.2f} dB at "
        f"{r['infer_ms'] / cnns[_conv_key(r)]['infer_ms']:.1f}x its inference time"
        for r in pacs
        if _conv_key(r) in cnns
    ]
    evidence = (
        f"the best PAC is {psnr_text(best_pac)}; the best one-layer CG, {psnr_text(cg)}, is "
        f"{margin:+.2f} dB from it with {_relative_cost(cg, best_pac)}"
        + (". Against the CNN of the same shape: " + "; ".join(twins) if twins else "")
        + "."
    )
    faster = cg["infer_ms"] < best_pac["infer_ms"]
    if margin > negligible_db and faster:
        return "supported", evidence
    if margin > negligible_db or (faster and margin > -negligible_db):
        return "partly supported", evidence
    return "not supported", evidence


def _on_rows(check: Check, negligible_db: float) -> Callable[[dict], tuple[str, str]]:
    return lambda results: check(results["models"], negligible_db)


def _rules(negligible_db: float) -> tuple[Rule, ...]:
    """The claims of §IV.A, in the order of the issue (the fifth is the Fig. 3 trend), then
    the comparisons with the other spatially-varying methods of §II (LCN, PAC)."""
    n = f"{negligible_db:g}"
    return (
        Rule(
            "CoordGate with one convolutional layer beats every CNN and CCNN",
            "CG learns the matrix with one convolutional layer, with significantly less "
            "inference time and a fraction of the parameters of a convolutional model.",
            (),
            _on_rows(_coordgate, negligible_db),
            "the CG compared is the one-layer CG with the fewest parameters whose median PSNR "
            "beats the best seed (max over seeds) of every CNN/CCNN (a winner), else the "
            "one-layer CG with the best median; supported if it is a winner with fewer "
            "parameters and less inference time than the CNN/CCNN of best median, partly "
            "supported if it is a winner without both, or is smaller and faster and its median "
            f"less than {n} dB below that CNN/CCNN's, not supported otherwise",
        ),
        Rule(
            "CoordConv gives no benefit over a CNN",
            "The CoordConv model possesses no benefit over a standard convolutional model.",
            (),
            _on_rows(_coordconv, negligible_db),
            "each CCNN(L,k,c) is paired with the CNN(L,k,c) of the same shape; a pair supports "
            f"the claim if the CCNN's median PSNR exceeds the CNN's by less than {n} "
            f"dB, else not; {_COMBINED}",
        ),
        Rule(
            "Random static input instead of coordinates does not converge",
            "With the static variable initialised as random numbers U(-1,1) instead of "
            "coordinates, CG was found not to converge.",
            (),
            _on_rows(_random_input, negligible_db),
            "each CG-random(L,k,c,p) is paired with its CG(L,k,c,p) twin and CNN(1,k,1); share = "
            "(CG-random median - CNN median) / (twin median - CNN median) of the PSNR, 1 if the "
            "twin's median is not above the CNN's; a pair supports the claim if share < 0.5 "
            "(never without the CNN), partly if the CG-random median is more than "
            f"{n} dB below the twin's, else not; {_COMBINED}",
        ),
        Rule(
            "More channels do not help a CNN",
            "CNN(4,7,4) vs CNN(4,7,20): adding channels does not help learn spatial variation.",
            (),
            _on_rows(_channels, negligible_db),
            "each pair of multi-layer CNNs with the same L and k and different c; a pair "
            f"supports the claim if the wider one's median PSNR exceeds the narrower's by less "
            f"than {n} dB, else not; {_COMBINED}",
        ),
        Rule(
            "Deeper CNNs do better (position leaks in through zero padding)",
            "Performance increases with successive layers: CNN(1,7,1) < CNN(3,7,4) < "
            "CNN(4,7,4) < CNN(8,7,4).",
            (),
            _on_rows(_depth, negligible_db),
            "for each kernel k, the CNNs of kernel k with one layer or 4 channels, ordered by "
            "depth (at least two of them); a chain "
            "supports the claim if the median PSNR rises at every step, partly if the deepest "
            f"one's median exceeds the shallowest one's by more than {n} dB, else "
            f"not; {_COMBINED}",
        ),
        Rule(
            "CoordGate matches a locally-connected network with fewer parameters and less time",
            "Locally-connected networks need far more parameters, tend to overfit and run "
            "slowly (§II); CoordGate gives a spatially-varying convolution at the cost of a "
            "convolution and a gate.",
            (),
            _on_rows(_lcn, negligible_db),
            "against the LCN of best median PSNR, the one-layer CGs match if their median is at "
            f"most {n} dB below the LCN's; the CG compared is the matching one with the "
            "fewest parameters, else the one of best median; supported if it matches and has "
            "fewer parameters and less inference time than the LCN, partly supported if only "
            "one of the two holds, not supported if neither",
        ),
        Rule(
            "Pixel-adaptive convolution's fixed pairwise form limits it",
            "PAC adapts a shared kernel with a fixed Gaussian of guidance-feature differences, "
            "which limits what it can express, and it cannot use fast convolution kernels (§II).",
            (),
            _on_rows(_pac, negligible_db),
            "margin = median PSNR of the best one-layer CG - that of the best PAC (best by "
            f"median); supported if margin > {n} dB and the CG's inference is "
            f"faster, partly supported if margin > {n} dB only, or if the CG is "
            f"faster and margin > -{n} dB, not supported otherwise",
        ),
    )


def claims(rows: Sequence[Row], negligible_db: float) -> list[Claim]:
    """The claims of §IV.A and §II judged from the model ``rows``: a claim's pairs match
    if their median PSNRs differ by less than ``negligible_db``."""
    return [rule.claim({"models": rows}) for rule in _rules(negligible_db)]


def judge(result: Mapping[str, object]) -> list[Claim]:
    """The claims of a study's results (its model rows and ``criteria``)."""
    return claims(result["models"], result["criteria"]["negligible_db"])
