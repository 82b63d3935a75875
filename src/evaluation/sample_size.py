"""How many patients are needed: to develop the model (Riley et al.'s criteria) and to validate it externally.

**Development** (:func:`riley_binary`): the minimum sample size for a prediction model of a binary outcome
by the three criteria of Riley et al. (2019, Stat Med 38:1276; 2020, BMJ 368:m441): (1) expected uniform
shrinkage of at least ``shrinkage`` (0.9), (2) an optimism of at most 0.05 in Nagelkerke's R², (3) the overall
outcome proportion estimated within 0.05. The published formulas, with the roundings of the reference
implementation ``pmsampsize`` (R/Stata; its Python port needs Python >= 3.12, this project supports 3.11) so
that the results equal its documented examples (tests). The anticipated Cox-Snell R² comes from the
anticipated C statistic (:func:`cstat_to_r2cs`; Riley et al. 2021, Stat Med 40:859): the linear predictor
binormal with equal variances, for which the logistic model is exact, so R²cs = 1 - exp(-2 I) with I the
mutual information of the predictor and the outcome, integrated here instead of fitted to a simulated
million patients (pmsampsize's way; the same number to ~1e-3, test). These criteria assume an unpenalised
logistic regression with that many parameters: for a regularised SVC on many regions they are conservative.

**External validation** (:func:`external_sample_size`): the patients an independent cohort needs so that
BAC and AUC exceed chance with 80 % and 90 % power, and so that their 95 % range is within +-0.1, by
simulation: each simulated cohort draws its responders' and non-responders' scores with replacement from
the model's out-of-fold discovery scores of that class (class counts fixed by the prevalence), thresholds at
the model's decision boundary and tests as the evaluation does — the BAC by the label-permutation test with
the predictions fixed (exactly the one-sided hypergeometric / Fisher test: for fixed margins the BAC is
increasing in the true positives), the AUC by the one-sided Mann-Whitney test. Assumptions: the new cohort's
scores are distributed as the discovery cohort's out-of-fold scores (same case mix, scanner behaviour and
effect: the seed study's external cohorts did worse, so these are minimums), the same responder prevalence
unless given, one-sided alpha 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import integrate
from scipy.stats import binom, hypergeom, mannwhitneyu, norm


def cstat_to_r2cs(cstatistic: float, prevalence: float) -> float:
    """The Cox-Snell R² of a logistic model with C statistic ``cstatistic`` at outcome ``prevalence``.

    Non-events' linear predictor N(0, 1), events' N(mu, 1) with mu = sqrt(2) Phi^-1(C) (so the AUC is C);
    P(event | x) is then exactly logistic in x, and the expected likelihood-ratio statistic per patient is
    twice the mutual information of x and the outcome."""
    if not 0.5 < cstatistic < 1.0:
        raise ValueError(f"C statistic must be in (0.5, 1), got {cstatistic}")
    mu = math.sqrt(2.0) * norm.ppf(cstatistic)
    phi = float(prevalence)
    intercept = math.log(phi / (1 - phi)) - mu * mu / 2

    def integrand(x: float) -> float:
        eta = intercept + mu * x
        log_p1, log_p0 = -np.logaddexp(0.0, -eta), -np.logaddexp(0.0, eta)
        return phi * norm.pdf(x, mu, 1.0) * log_p1 + (1 - phi) * norm.pdf(x) * log_p0

    expected_ll, _ = integrate.quad(integrand, -12.0, mu + 12.0, limit=200)
    null_ll = phi * math.log(phi) + (1 - phi) * math.log(1 - phi)
    return float(1.0 - math.exp(-2.0 * (expected_ll - null_ll)))


def riley_binary(r2cs: float, parameters: int, prevalence: float, shrinkage: float = 0.9) -> dict[str, Any]:
    """Riley et al.'s minimum development sample size of a binary-outcome model.

    Returns ``criteria`` (one dict per criterion: ``n``, ``shrinkage``, ``events``, ``epp``: events per
    candidate parameter), ``n`` (the largest), ``events``, ``epp``, ``max_r2cs`` and the inputs."""
    if parameters < 1:
        raise ValueError("parameters must be >= 1")
    if not 0 < r2cs < shrinkage:
        raise ValueError(f"the anticipated R2cs ({r2cs}) must be in (0, shrinkage={shrinkage})")

    def n_for(s: float) -> int:
        return math.ceil(parameters / ((s - 1) * math.log(1 - r2cs / s)))

    n1 = n_for(shrinkage)
    # the maximum R2cs of a model at this prevalence (rounded to 2 decimals, as pmsampsize does)
    null_ll = prevalence * math.log(prevalence) + (1 - prevalence) * math.log(1 - prevalence)
    max_r2cs = round(1 - math.exp(2 * null_ll), 2)
    if r2cs > max_r2cs:
        raise ValueError(f"the anticipated R2cs ({r2cs}) exceeds its maximum {max_r2cs} at this prevalence")
    s2 = round(r2cs / (r2cs + 0.05 * max_r2cs), 3)  # rounded to 3 decimals, as pmsampsize does
    n2 = n_for(s2)
    n3 = math.ceil((1.96 / 0.05) ** 2 * prevalence * (1 - prevalence))
    n = max(n1, n2, n3)

    def row(name: str, size: int, s: float | None) -> dict[str, Any]:
        events = size * prevalence
        return {
            "criterion": name,
            "n": size,
            "shrinkage": s,
            "events": events,
            "epp": round(events / parameters, 2),
        }

    criteria = [
        row(f"1: shrinkage >= {shrinkage:.2f}", n1, shrinkage),
        row("2: optimism in Nagelkerke R2 <= 0.05", n2, s2),
        row("3: outcome proportion within 0.05", n3, None),
    ]
    return {
        "criteria": criteria,
        "n": n,
        "events": n * prevalence,
        "epp": round(n * prevalence / parameters, 2),
        "shrinkage": max(shrinkage, s2),
        "max_r2cs": max_r2cs,
        "r2cs": r2cs,
        "parameters": parameters,
        "prevalence": prevalence,
    }


def bac_pvalues(tp: np.ndarray, tn: np.ndarray, n1: int, n0: int) -> np.ndarray:
    """One-sided label-permutation p of the BAC with the predictions fixed, exactly: with n1 positives among
    n = n1 + n0 and K = tp + fp predicted positive, the true positives are hypergeometric under permutation
    and the BAC increases with them, so p = P(TP >= tp) (= Fisher's exact test, one-sided)."""
    tp, tn = np.asarray(tp), np.asarray(tn)
    predicted_positive = tp + (n0 - tn)
    return hypergeom.sf(tp - 1, n1 + n0, predicted_positive, n1)


def binomial_pvalues(tp: np.ndarray, tn: np.ndarray, n1: int, n0: int) -> np.ndarray:
    """One-sided binomial p of the accuracy against 0.5 (a balanced cohort's BAC): the closed-form check."""
    return binom.sf(np.asarray(tp) + np.asarray(tn) - 1, n1 + n0, 0.5)


def binomial_power(n: int, accuracy: float, alpha: float = 0.05) -> float:
    """Closed-form power of the one-sided binomial test of accuracy > 0.5 at a true ``accuracy``."""
    k = int(binom.isf(alpha, n, 0.5)) + 1  # smallest count with P0(X >= k) <= alpha
    while k > 0 and binom.sf(k - 2, n, 0.5) <= alpha:
        k -= 1
    return float(binom.sf(k - 1, n, accuracy))


TESTS = {"permutation": bac_pvalues, "binomial": binomial_pvalues}


def simulate_cohorts(
    positive: np.ndarray,
    negative: np.ndarray,
    n: int,
    prevalence: float,
    n_sim: int,
    rng: np.random.Generator,
    *,
    threshold: float = 0.0,
    bac_test: str = "permutation",
) -> dict[str, np.ndarray]:
    """``n_sim`` cohorts of ``n`` patients (round(n x prevalence) responders) drawn from the class score
    samples: per cohort the BAC, AUC and their one-sided p-values."""
    n1 = min(max(int(round(n * prevalence)), 1), n - 1)
    n0 = n - n1
    pos = rng.choice(np.asarray(positive, float), size=(n_sim, n1), replace=True)
    neg = rng.choice(np.asarray(negative, float), size=(n_sim, n0), replace=True)
    tp = (pos > threshold).sum(axis=1)
    tn = (neg <= threshold).sum(axis=1)
    u = mannwhitneyu(pos, neg, alternative="greater", axis=1, method="asymptotic")
    return {
        "bac": (tp / n1 + tn / n0) / 2,
        "auc": u.statistic / (n1 * n0),
        "p_bac": TESTS[bac_test](tp, tn, n1, n0),
        "p_auc": u.pvalue,
    }


def power_table(
    positive: np.ndarray,
    negative: np.ndarray,
    sizes: Sequence[int],
    prevalence: float,
    *,
    n_sim: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    threshold: float = 0.0,
    bac_test: str = "permutation",
) -> pd.DataFrame:
    """Per cohort size: the power of the BAC and AUC tests and the half-width of the central 95 % of the
    simulated BAC and AUC (how precisely a cohort of that size estimates them)."""
    rows = []
    for i, n in enumerate(sizes):
        rng = np.random.default_rng([seed, i])
        sim = simulate_cohorts(
            positive, negative, int(n), prevalence, n_sim, rng, threshold=threshold, bac_test=bac_test
        )
        row: dict[str, Any] = {"n": int(n)}
        for metric in ("bac", "auc"):
            row[f"power_{metric}"] = float(np.mean(sim[f"p_{metric}"] < alpha))
            low, high = np.quantile(sim[metric], [0.025, 0.975])
            row[f"halfwidth_{metric}"] = float((high - low) / 2)
            row[f"mean_{metric}"] = float(np.mean(sim[metric]))
        rows.append(row)
    return pd.DataFrame(rows)


def smallest_n(table: pd.DataFrame, column: str, target: float, above: bool = True) -> int | None:
    """The smallest size from which ``column`` stays >= ``target`` (``above``) or <= it for every larger size
    of ``table`` (Monte-Carlo noise can cross a target twice); None when no size reaches it."""
    ok = (table[column] >= target) if above else (table[column] <= target)
    ok = ok.to_numpy()[::-1]
    if not ok[0]:
        return None
    run = np.argmin(ok) if not ok.all() else len(ok)
    return int(table["n"].to_numpy()[::-1][run - 1])


def external_sample_size(
    positive: np.ndarray,
    negative: np.ndarray,
    prevalence: float,
    *,
    powers: Sequence[float] = (0.8, 0.9),
    precision: float = 0.1,
    sizes: Sequence[int] | None = None,
    n_sim: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    threshold: float = 0.0,
) -> dict[str, Any]:
    """The external cohort sizes: for each power, the n at which the BAC (permutation test) and the AUC
    (Mann-Whitney) exceed chance at one-sided ``alpha``; the n at which each is estimated within
    +-``precision`` (half-width of the central 95 % of the simulated estimates). Returns the numbers and the
    whole power table."""
    sizes = list(sizes or [*range(10, 100, 5), *range(100, 300, 10), *range(300, 1001, 50)])
    table = power_table(
        positive, negative, sizes, prevalence, n_sim=n_sim, alpha=alpha, seed=seed, threshold=threshold
    )
    out: dict[str, Any] = {"prevalence": prevalence, "alpha": alpha, "n_sim": n_sim, "precision": precision}
    for metric in ("bac", "auc"):
        for power in powers:
            out[f"n_power{int(round(100 * power))}_{metric}"] = smallest_n(table, f"power_{metric}", power)
        out[f"n_precision_{metric}"] = smallest_n(table, f"halfwidth_{metric}", precision, above=False)
        out[f"expected_{metric}"] = float(table[f"mean_{metric}"].iloc[-1])
    out["max_n"] = int(max(sizes))
    return {"summary": out, "table": table}
