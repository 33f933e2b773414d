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
