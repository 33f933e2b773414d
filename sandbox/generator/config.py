"""The generator's configuration: `GeneratorConfig` and the documented default noise rates.

Owns: every knob of the synthetic province (seed, size, provinces, reference time, ratios) and the noise
catalogue `NOISE_DEFAULTS` (name -> default rate, with what it does and where). Names are stable: they are
written to truth/noise.parquet and truth/links.parquet and other code matches on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# name: (default rate, applies to, what it does). The rate is per eligible record (see "applies to").
NOISE_CATALOGUE: dict[str, tuple[float, str, str]] = {
    "missing_id": (0.02, "representative, land_holder (person)",
                   "ID number and ID type left empty"),
    "mistyped_id": (0.02, "representative, land_holder (person)",
                    "one digit of the ID changed, dropped, or two neighbouring digits swapped"),
    "old_id": (0.10, "representative, land_holder (person) who has an old 9-digit CMND, ID not missing",
               "the old 9-digit CMND given instead of the 12-digit CCCD (type CMND)"),
    "name_typo": (0.02, "representative, land_holder (person)",
                  "one letter of the name changed: accent dropped or changed, letter dropped or doubled"),
    "capitals": (0.05, "representative, land_holder (person)", "name written in capitals"),
    "swapped_name_order": (0.02, "representative, land_holder (person)",
                           "given name written first: 'An Nguyễn Văn'"),
    "nfd": (0.03, "citizen (hoVaTen), enterprise (whole record), land_holder (ho_ten)",
            "text in decomposed Unicode (NFD)"),
    "tcvn3": (0.02, "enterprise (whole record: TenDN, DiaChi, HoTen, ChucDanh)",
              "migrated from the old system: TCVN3 bytes read as Windows-1252 ('C«ng ty')"),
    "vni": (0.01, "enterprise (whole record, exclusive with tcvn3 and nfd)",
            "migrated from the old system: VNI bytes read as Windows-1252 ('Coâng ty')"),
    "date_format": (0.03, "enterprise (NgayThanhLap), representative (NgaySinh)",
                    "d/m/yyyy, yyyy-mm-dd or dd-mm-yyyy where dd/mm/yyyy is expected"),
    "partial_date": (0.01, "citizen (ngaySinh)", "day, or day and month, given as 00"),
    "malformed_dob": (0.003, "citizen (ngaySinh)",
                      "birth date sent as dd/mm/yyyy by a legacy feed where ISO yyyy-mm-dd is required (unparseable)"),
    "duplicate": (0.01, "citizen, enterprise, land_holder",
                  "the same entity recorded again under another key (ID, MaSoDN, id)"),
    "old_commune_code": (0.02, "citizen (noiThuongTru)",
                         "pre-2025 commune and province code where the 2025 code is expected"),
    "deceased_representative": (0.01, "enterprise with TinhTrang DANG_HOAT_DONG",
                                "a legal representative is a citizen recorded as deceased"),
    "invalid_tax_code": (0.005, "enterprise (MaSoDN), land_holder (organisation)",
                         "the tax code's check digit is wrong"),
    "share_mismatch": (0.02, "certificate with two or more co-holders",
                       "one co-holder's share changed so the shares do not sum to 100"),
}
NOISE_DEFAULTS: dict[str, float] = {name: rate for name, (rate, _, _) in NOISE_CATALOGUE.items()}


@dataclass(frozen=True)
class GeneratorConfig:
    """One synthetic province. Same config -> byte-identical files."""

    seed: int = 20261120
    citizens: int = 2000
    province: str = "31"  # 2025 province code of the population and business registries
    land_provinces: tuple[str, ...] = ("31", "01")  # one land database per province
    as_of: str = "2026-11-20T12:00:00+07:00"  # reference time: nothing is later, nothing reads the clock
    noise: dict[str, float] = field(default_factory=lambda: dict(NOISE_DEFAULTS))
    enterprise_ratio: float = 0.075  # enterprises per citizen
    parcel_ratio: float = 0.75  # parcels per citizen in the home province's land database
    other_land_scale: float = 0.25  # another province's land database is this fraction of the home one
    outside_ratio: float = 0.05  # people not in the registry (other provinces), per citizen

    def __post_init__(self) -> None:
        unknown = sorted(set(self.noise) - set(NOISE_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown noise names {unknown}; known: {sorted(NOISE_DEFAULTS)}")
        for name, rate in self.noise.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"noise rate {name}={rate} is not in [0, 1]")
        if self.citizens < 10:
            raise ValueError("citizens must be at least 10")
        object.__setattr__(self, "land_provinces", tuple(self.land_provinces))

    def rate(self, name: str) -> float:
        """The configured rate, the default for names the config leaves out."""
        return self.noise.get(name, NOISE_DEFAULTS[name])

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "citizens": self.citizens,
            "province": self.province,
            "land_provinces": list(self.land_provinces),
            "as_of": self.as_of,
            "noise": {k: self.rate(k) for k in sorted(NOISE_DEFAULTS)},
            "enterprise_ratio": self.enterprise_ratio,
            "parcel_ratio": self.parcel_ratio,
            "other_land_scale": self.other_land_scale,
            "outside_ratio": self.outside_ratio,
        }


# --- the synthetic country -------------------------------------------------------------------------------

# name: (default rate, applies to, what it does). Like the noises, each is an independent draw per eligible
# unit with its rate; config.json's `country_counts` says how many units were eligible and how many drawn.
COUNTRY_CATALOGUE: dict[str, tuple[float, str, str]] = {
    "moved_province": (0.15, "citizen",
                       "lives in another 2025 province than the one that registered their birth: the ID's first "
                       "three digits are a pre-2025 province of another 2025 province (weighted by population); "
                       "other citizens' IDs carry a pre-2025 province of where they live"),
    "land_other_province": (0.08, "certificate issuance held by persons (a reissue keeps its holders)",
                            "the holders (first holder and co-holders) are citizens of one other province, in "
                            "the registry: land held outside one's home province"),
    "org_land_other_province": (0.10, "certificate issuance held by an organisation",
                                "the organisation is an enterprise registered in another province"),
    "representative_other_province": (0.10, "representative not drawn from the outside persons",
                                      "a living adult citizen of another province represents the enterprise"),
    "id_two_provinces": (0.001, "citizen",
                         "one ID registered in two provinces by mistake: the registry gave this citizen the ID of "
                         "a citizen of another province with the same sex and birth year (so the ID still agrees "
                         "with both); every record of the person carries it"),
}
COUNTRY_DEFAULTS: dict[str, float] = {name: rate for name, (rate, _, _) in COUNTRY_CATALOGUE.items()}

# Approximate population (millions) of the 34 provinces of the 2025 reform, used only as weights: for the
# 23 merged provinces Resolution 202/2025/QH15's figures, for the 11 unchanged ones 2024 estimates, rounded
# to 0.1 million. The Resolution counts residents a little more broadly than the census (the sum is ~112
# million against ~101), which does not matter for proportions.
PROVINCE_POPULATION: dict[str, float] = {
    "01": 8.7, "04": 0.6, "08": 1.9, "11": 0.6, "12": 0.5, "14": 1.3, "15": 1.8, "19": 1.8, "20": 0.8,
    "22": 1.4, "24": 3.6, "25": 4.0, "31": 4.7, "33": 3.6, "37": 4.4, "38": 3.8, "40": 3.4, "42": 1.3,
    "44": 1.9, "46": 1.2, "48": 3.1, "51": 2.2, "52": 3.6, "56": 2.2, "66": 3.3, "68": 3.9, "75": 4.5,
    "79": 14.0, "80": 3.3, "82": 4.4, "86": 4.3, "91": 5.0, "92": 4.2, "96": 2.6,
}
PILOT_PROVINCE = "31"
MIN_PROVINCE_CITIZENS = 10  # GeneratorConfig's minimum


def country_provinces(n: int) -> tuple[str, ...]:
    """The first `n` provinces of a country: the pilot province (31 Hải Phòng), then by population
    (largest first, ties by code). n=3 -> ('31', '79', '01')."""
    if not 1 <= n <= len(PROVINCE_POPULATION):
        raise ValueError(f"a country has 1 to {len(PROVINCE_POPULATION)} provinces, not {n}")
    rest = sorted((c for c in PROVINCE_POPULATION if c != PILOT_PROVINCE), key=lambda c: (-PROVINCE_POPULATION[c], c))
    return (PILOT_PROVINCE, *rest)[:n]


def split_citizens(total: int, provinces: tuple[str, ...]) -> dict[str, int]:
    """`total` citizens over `provinces`: MIN_PROVINCE_CITIZENS each, the rest by PROVINCE_POPULATION
    (largest remainder, ties by order), so the counts sum to `total` exactly."""
    base = MIN_PROVINCE_CITIZENS * len(provinces)
    if total < base:
        raise ValueError(f"{len(provinces)} provinces need at least {base} citizens, not {total}")
    w = [PROVINCE_POPULATION[c] for c in provinces]
    quota = [(total - base) * x / sum(w) for x in w]
    counts = [int(q) for q in quota]
    order = sorted(range(len(provinces)), key=lambda i: (-(quota[i] - counts[i]), i))
    for i in order[: total - base - sum(counts)]:
        counts[i] += 1
    return {c: MIN_PROVINCE_CITIZENS + k for c, k in zip(provinces, counts, strict=True)}


@dataclass(frozen=True)
class CountryConfig:
    """A synthetic country: N provinces (2025 codes) generated province by province into one national
    population registry, one national business registry and one land database per province, with the
    cross-province facts of COUNTRY_CATALOGUE. Same config -> byte-identical files.

    Each province is a `GeneratorConfig` (`province_config`): seed `seed * 100 + int(code)`, its citizens,
    its own land database only, the country's noise and ratios."""

    provinces: tuple[str, ...] = ("31", "79", "01")  # generation order = person_id / enterprise_id order
    citizens: int = 3000  # total, split by split_citizens unless citizens_per_province is given
    citizens_per_province: dict[str, int] | None = None  # explicit counts, keys = provinces
    seed: int = 20261120
    as_of: str = "2026-11-20T12:00:00+07:00"
    noise: dict[str, float] = field(default_factory=lambda: dict(NOISE_DEFAULTS))
    rates: dict[str, float] = field(default_factory=lambda: dict(COUNTRY_DEFAULTS))
    enterprise_ratio: float = 0.075
    parcel_ratio: float = 0.75
    outside_ratio: float = 0.05
    # Each province lends a random sample of this share of its adults (and their spouses), and of its
    # enterprises, to the other provinces' records: only these samples are kept across provinces.
    pool_share: float = 0.10

    def __post_init__(self) -> None:
        from .places import new_province_codes

        object.__setattr__(self, "provinces", tuple(self.provinces))
        known = set(new_province_codes())
        bad = [c for c in self.provinces if c not in known]
        if bad:
            raise ValueError(f"not 2025 province codes: {bad}; known: {sorted(known)}")
        if len(set(self.provinces)) != len(self.provinces) or len(self.provinces) < 2:
            raise ValueError("a country needs at least two distinct provinces")
        unknown = sorted(set(self.rates) - set(COUNTRY_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown country rates {unknown}; known: {sorted(COUNTRY_DEFAULTS)}")
        for name, rate in self.rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"country rate {name}={rate} is not in [0, 1]")
        if not 0.0 < self.pool_share <= 1.0:
            raise ValueError(f"pool_share={self.pool_share} is not in (0, 1]")
        if self.citizens_per_province is not None:
            if set(self.citizens_per_province) != set(self.provinces):
                raise ValueError("citizens_per_province must name exactly the provinces")
        self.province_config(self.provinces[0])  # validates noise, counts and as_of early
        self.citizens_by_province()

    def rate(self, name: str) -> float:
        return self.rates.get(name, COUNTRY_DEFAULTS[name])

    def citizens_by_province(self) -> dict[str, int]:
        if self.citizens_per_province is not None:
            return {c: int(self.citizens_per_province[c]) for c in self.provinces}
        return split_citizens(self.citizens, self.provinces)

    def province_seed(self, province: str) -> int:
        return self.seed * 100 + int(province)

    def province_config(self, province: str) -> GeneratorConfig:
        """The GeneratorConfig of one province of the country."""
        return GeneratorConfig(
            seed=self.province_seed(province), citizens=self.citizens_by_province()[province], province=province,
            land_provinces=(province,), as_of=self.as_of, noise=dict(self.noise),
            enterprise_ratio=self.enterprise_ratio, parcel_ratio=self.parcel_ratio, other_land_scale=1.0,
            outside_ratio=self.outside_ratio,
        )

    def to_json(self) -> dict:
        by_province = self.citizens_by_province()
        return {
            "seed": self.seed,
            "provinces": list(self.provinces),
            "citizens": sum(by_province.values()),
            "citizens_per_province": by_province,
            "province_seeds": {c: self.province_seed(c) for c in self.provinces},
            "as_of": self.as_of,
            "noise": {k: self.noise.get(k, NOISE_DEFAULTS[k]) for k in sorted(NOISE_DEFAULTS)},
            "country_rates": {k: self.rate(k) for k in sorted(COUNTRY_DEFAULTS)},
            "enterprise_ratio": self.enterprise_ratio,
            "parcel_ratio": self.parcel_ratio,
            "outside_ratio": self.outside_ratio,
            "pool_share": self.pool_share,
        }
