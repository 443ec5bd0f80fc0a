"""``securepool bench he``: HE-mode aggregation timed per role, against raw TenSEAL.

    securepool bench he --n 50 --d 1000000 --json [--repeats 3] [--workers 1]

Runs one HE group session of ``n`` synthetic participants (updates ~ N(0, 0.05^2),
sample counts uniform in 50..500) through the SecurePool roles (HEParticipant,
HECoordinator, HEKeyHolder, driven by :class:`securepool.bench.sessions.HEGroup` in
the coordinator loop's order), then the same work with
raw TenSEAL in the same process: (a) at the framework's own parameters (the overhead
ratio) and (b) at NVFlare's default parameters (N = 8192, [60, 40, 40], scale 2^40),
the way NVFlare does it (one ``ts.ckks_vector`` per update; TenSEAL chunks it).

Figures (medians over ``--repeats``):

* ``enc_s_per_party``  one participant: weight, tag, encrypt, frame, seal, sign
* ``server_s``         the coordinator for the whole group: check every upload
  (framing, signature, digest, every chunk's layout and coefficients) and add the
  ciphertexts as coefficient arrays, in ``--workers`` threads (0: one per core)
* ``decrypt_s``        the auditor: check receipts, decrypt, check tags, release
* ``bytes_per_param``  upload + receipt bytes per model parameter
* ``profile_s`` (``--profile``)  cumulative seconds of the steps of one participant's
  upload and of the key holder's decryption, from one extra round under cProfile
* ``overhead_vs_raw_same_params.enc_s_per_party_paired``  median over participants of
  framework / raw encryption time, each pair run back to back (drift cancels)
* ``max_abs_error``, ``rel_error``  of the weighted mean against float64 FedAvg
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tenseal as ts

from crypto.ckks.coefficients import ChunkCodec
from crypto.ckks.sealbox import seal_to
from crypto.ckks.tags import expand_tags
from crypto.ckks.vectors import _check_rows, decrypt_chunks, encrypt_chunks
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput
from protocols.he import HEKeyHolder, HEParticipant, HESettings
from protocols.he.layout import SlotLayout
from protocols.he.messages import AggregateRelease, DecryptRequest, HEUpload
from protocols.he.participant import upload_digest
from protocols.secagg.client import default_model_digest
from securepool.bench.sessions import HEGroup

NVFLARE: dict[str, Any] = {
    "poly_modulus_degree": 8192,
    "coeff_mod_bit_sizes": [60, 40, 40],
    "scale_bits": 40,
}


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence C++ writes to fd 1 (TenSEAL warns on stdout for multi-ciphertext vectors)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def make_inputs(n: int, d: int, *, seed: int) -> dict[str, ClientInput]:
    rng = np.random.default_rng(seed)
    return {
        f"p{i:03d}": ClientInput(
            (rng.standard_normal(d) * 0.05).astype(np.float32),
            weight=float(rng.integers(50, 501)),
        )
        for i in range(n)
    }


def errors(
    weighted_sum: np.ndarray, total: float, inputs: dict[str, ClientInput]
) -> dict[str, float]:
    ref = np.zeros(next(iter(inputs.values())).update.size, dtype=np.float64)
    for inp in inputs.values():
        ref += inp.weight * inp.update.astype(np.float64)
    ref_w = sum(inp.weight for inp in inputs.values())
    mean, ref_mean = weighted_sum / total, ref / ref_w
    err = float(np.max(np.abs(mean - ref_mean)))
    return {"max_abs_error": err, "rel_error": err / float(np.max(np.abs(ref_mean)))}


# The steps of a participant's upload and of the key holder's decryption that
# ``--profile`` reports (cumulative seconds; nested steps are inside their parents).
UPLOAD_STEPS: dict[str, Callable[..., Any]] = {
    "upload (total)": HEParticipant.upload,
    "encrypt_chunks (TenSEAL, with row checks)": encrypt_chunks,
    "row checks (finite, headroom)": _check_rows,
    "SHA-256 of the upload (receipt digest)": upload_digest,
    "pack rows": SlotLayout.pack,
    "frame the upload": HEUpload.to_bytes,
    "expand contribution tags": expand_tags,
    "seal the tag seed": seal_to,
    "sign the receipt": IdentityKey.sign,
}
DECRYPT_STEPS: dict[str, Callable[..., Any]] = {
    "decrypt_aggregate (total)": HEKeyHolder.decrypt_aggregate,
    "parse the request": DecryptRequest.from_bytes,
    "check receipts (signature, sealed tag seed)": HEKeyHolder._check_receipts,
    "expand contribution tags": expand_tags,
    "decrypt_chunks (codec check, TenSEAL load + decrypt)": decrypt_chunks,
    "codec check of the aggregate's chunks": ChunkCodec.read,
    "release message": AggregateRelease.to_bytes,
}


def _cumulative(prof: cProfile.Profile, steps: dict[str, Callable[..., Any]]) -> dict[str, float]:
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out = {}
    for label, fn in steps.items():
        code = fn.__code__
        entry = stats.get((code.co_filename, code.co_firstlineno, code.co_name))
        out[label] = entry[3] if entry else 0.0
    return out


def framework_round(
    settings: HESettings, inputs: dict[str, ClientInput], *, session: str, profile: bool = False
) -> dict[str, Any]:
    """One HE session, role by role, timed (:meth:`HEGroup.run`).

    ``profile``: also run the first participant's upload and the decryption under
    cProfile and report the steps of UPLOAD_STEPS / DECRYPT_STEPS (the round's times are
    then inflated by the profiler: use a separate round for them).
    """
    group = HEGroup(settings)
    up_prof = cProfile.Profile() if profile else None
    dec_prof = cProfile.Profile() if profile else None
    run = group.run(session, inputs, upload_profile=up_prof, decrypt_profile=dec_prof)
    if run.excluded:
        raise RuntimeError(f"benchmark participants excluded: {run.excluded}")
    clock = run.clock
    d = next(iter(inputs.values())).update.size
    return {
        "enc_s_per_party": statistics.median(clock.clients.values()),
        "server_s": clock.steps["check"] + clock.steps["sum"],
        "decrypt_s": clock.steps["decrypt"],
        "bytes_per_param": statistics.mean(run.upload_bytes.values()) / d,
        **errors(run.release.weighted_sum, run.release.total_weight, inputs),
        **(
            {
                "profile_s": {
                    "upload": _cumulative(up_prof, UPLOAD_STEPS),
                    "decrypt": _cumulative(dec_prof, DECRYPT_STEPS),
                }
            }
            if up_prof is not None and dec_prof is not None
            else {}
        ),
    }


def raw_round(
    *, poly_modulus_degree: int, coeff_mod_bit_sizes: list[int], scale_bits: int,
    inputs: dict[str, ClientInput], weight_unit: float,
) -> dict[str, Any]:
    """Raw TenSEAL, NVFlare-style: one vector per update (TenSEAL chunks it), one key."""
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree, coeff_mod_bit_sizes=coeff_mod_bit_sizes
    )
    scale = float(2**scale_bits)
    public = ts.context_from(ctx.serialize(save_secret_key=False))
    blobs: list[bytes] = []
    enc: list[float] = []
    with quiet_stdout():
        for inp in inputs.values():
            w = inp.weight / weight_unit
            t = time.perf_counter()
            payload = np.append(inp.update.astype(np.float64) * w, w)
            blobs.append(ts.ckks_vector(public, payload, scale=scale).serialize())
            enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        acc = ts.ckks_vector_from(public, blobs[0])
        for b in blobs[1:]:
            acc.add_(ts.ckks_vector_from(public, b))
        agg_bytes = acc.serialize()
        server = time.perf_counter() - t
        t = time.perf_counter()
        plain = np.asarray(ts.ckks_vector_from(ctx, agg_bytes).decrypt(), dtype=np.float64)
        decrypt = time.perf_counter() - t
    d = next(iter(inputs.values())).update.size
    return {
        "params": f"N={poly_modulus_degree} {coeff_mod_bit_sizes} scale=2^{scale_bits}",
        "enc_s_per_party": statistics.median(enc),
        "server_s": server,
        "decrypt_s": decrypt,
        "bytes_per_param": statistics.mean(len(b) for b in blobs) / d,
        **errors(plain[:d] * weight_unit, float(plain[d]) * weight_unit, inputs),
    }


def paired_encrypt_ratio(
    settings: HESettings, inputs: dict[str, ClientInput], *, weight_unit: float
) -> float:
    """Median over participants of (framework upload time) / (raw TenSEAL encryption time).

    Each pair runs back to back on the same update under the same public context, the
    order alternating, so machine drift between the framework and raw runs cancels.
    """
    group = HEGroup(settings)
    scale = settings.params.scale
    ratios: list[float] = []
    for i, (pid, inp) in enumerate(inputs.items()):
        participant = group.participant(pid)
        times: dict[str, float] = {}
        with quiet_stdout():
            for name in ("fw", "raw") if i % 2 == 0 else ("raw", "fw"):
                t = time.perf_counter()
                if name == "fw":
                    participant.upload(
                        session=f"pair-{i}",
                        update=inp.update,
                        weight=inp.weight,
                        model_digest=default_model_digest(f"pair-{i}"),
                    )
                else:
                    w = inp.weight / weight_unit
                    payload = np.append(inp.update.astype(np.float64) * w, w)
                    blob = ts.ckks_vector(participant.public.tenseal, payload, scale=scale)
                    blob.serialize()
                times[name] = time.perf_counter() - t
        ratios.append(times["fw"] / times["raw"])
    return statistics.median(ratios)


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
        else:
            out[key] = value
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench he")
    p.add_argument("--n", type=int, default=10, help="participants in the group")
    p.add_argument("--d", type=int, default=100_000, help="parameters per update")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument(
        "--workers", type=int, default=0, help="coordinator's summing threads (0: one per core)"
    )
    p.add_argument("--poly-modulus-degree", type=int, default=None)
    p.add_argument("--coeff-mod-bit-sizes", default=None, help="e.g. 50,60")
    p.add_argument("--scale-bits", type=int, default=None)
    p.add_argument("--weight-unit", type=float, default=250.0)
    p.add_argument("--no-raw", action="store_true", help="skip the raw TenSEAL baselines")
    p.add_argument(
        "--profile",
        action="store_true",
        help="one extra round: upload and decryption steps under cProfile (profile_s)",
    )
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    args = p.parse_args(argv)
    overrides: dict[str, Any] = {"weight_unit": args.weight_unit, "workers": args.workers}
    overrides["max_contributors"] = max(args.n, HESettings.max_contributors)
    if args.poly_modulus_degree:
        overrides["poly_modulus_degree"] = args.poly_modulus_degree
    if args.coeff_mod_bit_sizes:
        chain = tuple(int(b) for b in args.coeff_mod_bit_sizes.split(","))
        overrides["coeff_mod_bit_sizes"] = chain
    if args.scale_bits:
        overrides["scale_bits"] = args.scale_bits
    settings = HESettings(**overrides)
    settings.check()
    own: dict[str, Any] = {
        "poly_modulus_degree": settings.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(settings.coeff_mod_bit_sizes),
        "scale_bits": settings.scale_bits,
    }
    fw_runs, same_runs, nv_runs = [], [], []
    for r in range(args.repeats):
        inputs = make_inputs(args.n, args.d, seed=r)
        fw_runs.append(framework_round(settings, inputs, session=f"bench-{r}"))
        if not args.no_raw:
            same_runs.append(raw_round(**own, inputs=inputs, weight_unit=args.weight_unit))
            nv_runs.append(raw_round(**NVFLARE, inputs=inputs, weight_unit=args.weight_unit))
    fw = _median_of(fw_runs)
    out: dict[str, Any] = {
        "n": args.n,
        "d": args.d,
        "repeats": args.repeats,
        "threads": settings.threads(),
        "params": settings.params.label(),
        **fw,
    }
    if args.profile:
        inputs = make_inputs(args.n, args.d, seed=args.repeats + 1)
        profiled = framework_round(settings, inputs, session="profile", profile=True)
        out["profile_s"] = profiled["profile_s"]
    if not args.no_raw:
        same, nv = _median_of(same_runs), _median_of(nv_runs)
        out["raw_tenseal_same_params"] = same
        out["raw_tenseal_nvflare_default"] = nv
        keys = ("enc_s_per_party", "server_s", "decrypt_s", "bytes_per_param")
        out["overhead_vs_raw_same_params"] = {k: fw[k] / same[k] for k in keys}
        inputs = make_inputs(args.n, args.d, seed=args.repeats)
        out["overhead_vs_raw_same_params"]["enc_s_per_party_paired"] = paired_encrypt_ratio(
            settings, inputs, weight_unit=args.weight_unit
        )
        out["ratio_vs_nvflare_default"] = {k: fw[k] / nv[k] for k in keys}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
