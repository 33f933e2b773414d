"""The cross-province draws of a synthetic country, handed to the province generator of one province.

Owns `Cross`: what one province of a country needs from the others and the draws that make the facts of
config.COUNTRY_CATALOGUE (birth-registration provinces of people who moved, representatives and land
holders from other provinces), each from its own named stream so the province's own draws are the same
with or without them; and the pools other provinces lend (`PersonPool`, `EnterprisePool`: a sample of
their adults with spouses, and of their enterprises). Indices it returns into the pools are offset by the
size of the province's own arrays: the province generator renders them through `augmented_people` /
`augmented_enterprises`, and the country driver maps them to national ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from . import places
from .common import stream
from .config import COUNTRY_DEFAULTS, PROVINCE_POPULATION

if TYPE_CHECKING:
    from .people import People


@dataclass
class PersonPool:
    """Persons other provinces' records may name: per province a sample of adults and their spouses."""

    people: People  # the pooled rows of each province's People; `spouse` indexes this pool (-1: none)
    pid: np.ndarray  # national person_id
    prov: np.ndarray  # index of the province in the country
    primary: np.ndarray  # a sampled adult (may head a holder group); False: only a sampled adult's spouse
    rep_ok: np.ndarray  # primary, alive and at least 20 years old: may represent an enterprise


@dataclass
class EnterprisePool:
    """Enterprises other provinces' land records may name as holders: per province a sample."""

    eid: np.ndarray  # national enterprise_id
    prov: np.ndarray
    code_str: pa.Array
    name: pa.Array
    address: pa.Array


@dataclass
class Cross:
    """One province's view of the country. Without pools (the country's first pass) only the birth
    provinces are drawn; the other draws leave the province's own choices as they are."""

    seed: int  # the country's seed
    province: str
    index: int  # position of the province in the country
    rates: dict[str, float]
    weights: np.ndarray  # citizens per province of the country: where cross-province people come from
    persons: PersonPool | None = None
    enterprises: EnterprisePool | None = None
    counts: dict[str, list[int]] = field(default_factory=dict)  # name -> [eligible, applied]
    _augmented: tuple[int, People] | None = field(default=None, init=False, repr=False)

    def rate(self, name: str) -> float:
        return self.rates.get(name, COUNTRY_DEFAULTS[name])

    def rng(self, part: str) -> np.random.Generator:
        return stream(self.seed, f"country-{part}-{self.province}")

    def count(self, name: str, eligible: int, applied: int) -> None:
        slot = self.counts.setdefault(name, [0, 0])
        slot[0] += int(eligible)
        slot[1] += int(applied)

    # --- people who moved -------------------------------------------------------------------------------

    def birth_prefixes(self, res_old_province: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per citizen (residence's pre-2025 province code as str): the pre-2025 province code of their
        birth registration (the ID's first three digits, as int) and whether they moved province."""
        rng = self.rng("moved")
        n = len(res_old_province)
        moved = rng.random(n) < self.rate("moved_province")
        others = [c for c in places.new_province_codes() if c != self.province]
        w = np.array([PROVINCE_POPULATION[c] for c in others])
        dest = rng.choice(len(others), size=n, p=w / w.sum())
        k = rng.integers(0, 1 << 30, n)
        mover = np.zeros(n, dtype=np.int64)
        for j, code in enumerate(others):
            sel = dest == j
            olds = np.array(places.old_codes_of(code), dtype=np.int64)
            mover[sel] = olds[k[sel] % len(olds)]
        to_new = places.old_to_new_province()
        own = places.old_codes_of(self.province)
        main = int(self.province) if int(self.province) in own else own[-1]  # '31' Hải Phòng: old 31
        local_codes = sorted(set(res_old_province.tolist()))
        local = np.zeros(n, dtype=np.int64)
        for code in local_codes:
            # A residence commune whose old province went elsewhere (none in the package's lists) would
            # make a stay-at-home look moved: fall back to the province's main old code.
            value = int(code) if to_new.get(code) == self.province else main
            local[res_old_province == code] = value
        self.count("moved_province", n, int(moved.sum()))
        return np.where(moved, mover, local), moved

    # --- draws from the other provinces' pools --------------------------------------------------------

    def _pool_draw(self, rng: np.random.Generator, prov: np.ndarray, mask: np.ndarray, k: int,
                   within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """k pool indices among entries with `mask`: each from another province (chosen by weight among
        those with candidates), or, with `within` (province index per draw), from that province.
        Returns (indices, province per draw)."""
        cands = [np.flatnonzero(mask & (prov == q)) for q in range(len(self.weights))]
        if within is None:
            w = np.array([self.weights[q] if q != self.index and len(cands[q]) else 0.0
                          for q in range(len(self.weights))])
            if k == 0 or w.sum() == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            within = rng.choice(len(w), size=k, p=w / w.sum())
        u = rng.integers(0, 1 << 30, k)
        out = np.zeros(k, dtype=np.int64)
        for q in np.unique(within):
            sel = within == q
            out[sel] = cands[q][u[sel] % len(cands[q])]
        return out, within

    def representatives(self, chosen: np.ndarray, from_out: np.ndarray, offset: int) -> np.ndarray:
        """Representatives (person index per slot): slots not given to an outside person go to a living
        adult citizen of another province with the rate; their index is `offset` + pool index."""
        if self.persons is None:
            return chosen
        pool = self.persons
        rng = self.rng("representatives")
        hit = ~from_out & (rng.random(len(chosen)) < self.rate("representative_other_province"))
        idx, _ = self._pool_draw(rng, pool.prov, pool.rep_ok, int(hit.sum()))
        hit[np.flatnonzero(hit)[len(idx):]] = False  # no candidates anywhere: stay local
        out = chosen.copy()
        out[hit] = offset + idx
        self.count("representative_other_province", int((~from_out).sum()), int(hit.sum()))
        return out

    def land_holders(self, draws: np.ndarray, org: np.ndarray, is_org: np.ndarray, counted: np.ndarray,
                     n_people: int, n_ent: int) -> tuple[np.ndarray, np.ndarray]:
        """Holders per certificate issuance: draws (m, 3) person indices (-1: none), org (m,) enterprise
        index. A person-held issuance goes with the rate to a holder group of one other province (first
        holder a pooled adult, the second their spouse 8 times in 10, else another pooled person of that
        province); an organisation-held one to an enterprise of another province. Pool indices are offset
        by n_people / n_ent. `counted` marks the issuances that are drawn, not copied (reissues)."""
        if self.persons is None or self.enterprises is None:
            return draws, org
        rng = self.rng("land")
        m = len(org)
        u, u_org, u_sp = rng.random(m), rng.random(m), rng.random(m)
        pool = self.persons
        rows = np.flatnonzero(~is_org & (u < self.rate("land_other_province")))
        first, q = self._pool_draw(rng, pool.prov, pool.primary, len(rows))
        rows = rows[: len(first)]
        everyone = np.ones(len(pool.prov), dtype=bool)
        second, _ = self._pool_draw(rng, pool.prov, everyone, len(rows), within=q)
        third, _ = self._pool_draw(rng, pool.prov, everyone, len(rows), within=q)
        sp = pool.people.spouse[first]
        second = np.where((sp >= 0) & (u_sp[rows] < 0.8), sp, second)
        second = np.where(second == first, -1, second)
        third = np.where((third == first) | (third == second), -1, third)
        draws = draws.copy()
        draws[rows] = np.stack([first + n_people, np.where(second >= 0, second + n_people, -1),
                                np.where(third >= 0, third + n_people, -1)], axis=1)
        ent = self.enterprises
        orows = np.flatnonzero(is_org & (u_org < self.rate("org_land_other_province")))
        eidx, _ = self._pool_draw(rng, ent.prov, np.ones(len(ent.prov), dtype=bool), len(orows))
        orows = orows[: len(eidx)]
        org = org.copy()
        org[orows] = n_ent + eidx
        hit = np.zeros(m, dtype=bool)
        hit[rows] = True
        ohit = np.zeros(m, dtype=bool)
        ohit[orows] = True
        self.count("land_other_province", int((counted & ~is_org).sum()), int((counted & hit).sum()))
        self.count("org_land_other_province", int((counted & is_org).sum()), int((counted & ohit).sum()))
        return draws, org

    # --- the province's arrays followed by the pools ---------------------------------------------------

    def augmented_people(self, people: People) -> People:
        """`people` followed by the person pool (indices from `representatives` / `land_holders` point
        into it); cached for the province's People object."""
        if self.persons is None:
            return people
        if self._augmented is None or self._augmented[0] != id(people):
            self._augmented = (id(people), people.extend(self.persons.people))
        return self._augmented[1]

    def augmented_enterprises(self, code_str: pa.Array, name: pa.Array,
                              address: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
        if self.enterprises is None:
            return code_str, name, address
        e = self.enterprises
        return (pa.concat_arrays([code_str, e.code_str]), pa.concat_arrays([name, e.name]),
                pa.concat_arrays([address, e.address]))
