"""Part 3 of bench/molecules.py: from SMILES, as a chemist runs both sides (issue 16.10).

The speed-up rows of part 1 time B3LYP single points at QM9's own DFT-optimised
geometries and MPNN inference on molecules already read and featurised. Here
both sides start from the same SMILES strings and pay for their own 3-D
structure:

- deepsci: ``molecules predict smiles.smi`` through the product
  (:func:`deepsci.apps.molecules.predict.predict_molecules`): RDKit ETKDGv3
  conformer + MMFF relaxation, featurisation, the shipped default model, CSV
  written; the model is loaded inside the timed call.
- DFT: the same RDKit conformer (:func:`~deepsci.apps.molecules.featurize.embed_smiles`,
  same seed), then a PySCF B3LYP/6-31G(2df,p) single point at it
  (:func:`~deepsci.apps.molecules.label.label_molecule`, QM9's level of theory,
  no geometry optimisation, no polarisability).

Neither side optimises the geometry at the DFT level (QM9 did), so this is
the cheapest DFT a chemist could run for these properties.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _sci(x: float) -> str:
    mant, exp = f"{x:.1e}".split("e")
    sup = str(int(exp)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mant} × 10{sup}"


def _smiles(n: int, heavy: int, seed: int, *, at_least: int | None = None) -> list[str]:
    """``n`` (or at least ``at_least``) QM9 SMILES with ``heavy`` heavy atoms that RDKit embeds in 3-D."""
    from deepsci.apps.molecules.featurize import embed_smiles
    from deepsci.apps.molecules.io import read_qm9pack

    ms = read_qm9pack(limit=max(200 * n, 20_000), seed=seed)
    out = []
    for s, m in zip(ms.smiles, ms.mols, strict=True):
        if len(out) == n:
            break
        if sum(a.GetAtomicNum() > 1 for a in m.GetAtoms()) != heavy:
            continue
        try:  # a few strained QM9 cages have no ETKDG conformer: neither side can start
            embed_smiles(s, seed=0, optimize=False)
        except ValueError:
            continue
        out.append(s)
    if len(out) < (n if at_least is None else at_least):
        raise SystemExit(f"expected {n} QM9 molecules with {heavy} heavy atoms, found {len(out)}")
    return out


def _predict(smiles: list[str], work: Path, name: str) -> tuple[float, float]:
    from deepsci.apps.molecules.predict import PredictConfig, predict_molecules

    src = work / f"{name}.smi"
    src.write_text("\n".join(smiles) + "\n")
    out = work / f"{name}.csv"
    t, c = time.perf_counter(), time.process_time()
    predict_molecules(PredictConfig(inputs=str(src), out=str(out)).validate(), overwrite=True)
    return time.perf_counter() - t, time.process_time() - c


def end_to_end(args, work: Path) -> tuple[str, dict]:
    """Time SMILES -> conformer -> MPNN against SMILES -> conformer -> B3LYP."""
    from deepsci.apps.molecules.featurize import embed_smiles
    from deepsci.apps.molecules.label import label_molecule
    from deepsci.core.bench import table

    work.mkdir(parents=True, exist_ok=True)
    smiles = _smiles(args.e2e_molecules, args.e2e_heavy, seed=2)
    _predict(smiles[:2], work, "warm")  # TensorFlow's one-off start-up is not the molecules' cost
    mpnn_wall, mpnn_cpu = _predict(smiles, work, "e2e")
    many = _smiles(1000, args.e2e_heavy, seed=3, at_least=1)
    bulk_wall, _ = _predict(many, work, "bulk")
    wall, cpu, conf = [], [], []
    for s in smiles:
        t, c = time.perf_counter(), time.process_time()
        mol = embed_smiles(s, seed=0)
        conf.append(time.perf_counter() - t)
        label_molecule(mol, method="b3lyp-qm9", polarizability=False)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        print(f"  SMILES -> conformer -> B3LYP {s}: {wall[-1]:.1f} s wall, {cpu[-1]:.1f} s CPU",
              flush=True)
    n = len(smiles)
    measured = {"molecules": n, "heavy_atoms": args.e2e_heavy, "dft_wall_s": float(np.mean(wall)),
                "dft_cpu_s": float(np.mean(cpu)), "conformer_s": float(np.mean(conf)),
                "mpnn_wall_s": mpnn_wall / n, "mpnn_cpu_s": mpnn_cpu / n,
                "mpnn_bulk_wall_s": bulk_wall / len(many), "bulk_molecules": len(many)}
    rows = [{"method": "SMILES -> RDKit conformer -> B3LYP/6-31G(2df,p) single point", "molecules": n,
             "s / molecule": measured["dft_wall_s"], "CPU s / molecule": measured["dft_cpu_s"]},
            {"method": "`molecules predict` on the same SMILES (conformer, MPNN, CSV; model load incl.)",
             "molecules": n, "s / molecule": measured["mpnn_wall_s"],
             "CPU s / molecule": measured["mpnn_cpu_s"]},
            {"method": f"`molecules predict` on {len(many):,} further SMILES", "molecules": len(many),
             "s / molecule": measured["mpnn_bulk_wall_s"], "CPU s / molecule": None}]
    md = table(rows, ["method", "molecules", "s / molecule", "CPU s / molecule"])
    md += (f"\n\nSpeed-up by wall time: {_sci(measured['dft_wall_s'] / measured['mpnn_wall_s'])} "
           f"on the same {n} molecules, {_sci(measured['dft_wall_s'] / measured['mpnn_bulk_wall_s'])} "
           f"per molecule on {len(many):,}. RDKit conformers take {measured['conformer_s'] * 1e3:.0f} ms "
           "per molecule on the DFT side.")
    return md, measured


def e2e_rows(m: dict) -> list[dict]:
    """The results-page row of part 3 (no goal: the issue asks for the honest figure)."""
    speed = m["dft_wall_s"] / m["mpnn_wall_s"]
    bulk = m["dft_wall_s"] / m["mpnn_bulk_wall_s"]
    return [{
        "metric": f"end to end from SMILES, a 3-D RDKit conformer on both sides, by wall time "
                  f"({m['molecules']} QM9 molecules with {m['heavy_atoms']} heavy atoms for DFT)",
        "deepsci": f"{_sci(speed)} ({_sci(bulk)} per molecule over {m['bulk_molecules']:,})",
        "peer": f"SMILES -> conformer -> PySCF B3LYP/6-31G(2df,p) single point: "
                f"{m['dft_wall_s']:.1f} s per molecule",
        "goal": None, "met": None}]
