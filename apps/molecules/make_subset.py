"""Regenerate the bundled QM9 subset ``data/molecules/qm9_subset.csv.gz`` from qm9pack.

Run ``python -m deepsci.apps.molecules.make_subset [--n 4000] [--seed 0] [--out PATH]``
with the ``qm9`` extra installed. The output is the app's CSV format (``id``,
``smiles``, ``xyz`` geometry in Å, the 12 Gilmer targets in canonical units),
gzipped reproducibly. Molecules whose bonds RDKit cannot perceive from the
geometry are left out, exactly as ``--dataset qm9`` leaves them out.

QM9: R. Ramakrishnan, P. O. Dral, M. Rupp, O. A. von Lilienfeld, "Quantum
chemistry structures and properties of 134 kilo molecules", Scientific Data 1,
140022 (2014), CC BY 4.0 (figshare); packaged as CSV by qm9pack (MIT).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .io import read_qm9pack, write_csv

__all__ = ["make_subset"]

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "data" / "molecules" / "qm9_subset.csv.gz"


def make_subset(out: Path = DEFAULT_OUT, *, n: int = 4000, seed: int = 0) -> Path:
    """Write a seeded random sample of ``n`` QM9 molecules (fewer if some are skipped)."""
    ms = read_qm9pack(limit=n, seed=seed, skip_invalid=True)
    return write_csv(out, ids=ms.ids, smiles=ms.smiles, mols=ms.mols,
                     columns={c: ms.targets[c].to_numpy() for c in ms.targets.columns},
                     units=ms.units)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    path = make_subset(a.out, n=a.n, seed=a.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
