"""A three-province country (sandbox `CountryConfig`) through the real connectors, staging and one
reconciliation: people hold land and represent enterprises outside their home province, and those links are
found at the same accuracy as the ones inside it (scored on the country's truth, `linkscore`)."""

from __future__ import annotations

import pytest
from province import reconciled_province

pytestmark = pytest.mark.integration

TOLERANCE = 0.03  # F1, cross-province against in-province, on a few hundred links of each


def test_cross_province_links_are_found_as_well_as_in_province_ones(tmp_path):
    from lienthong import zones
    from lienthong.linkscore import link_accuracy
    from sandbox.generator import CountryConfig

    # raised rates so that each part has enough links to compare at test size
    country = CountryConfig(provinces=("31", "79", "01"), citizens=2400, seed=7,
                            rates={"land_other_province": 0.3, "representative_other_province": 0.3,
                                   "moved_province": 0.2})
    with reconciled_province(tmp_path, citizens=0, seed=0, config=country) as prov:
        outputs = prov["first"]["outputs"]
        tables = {name: zones.read_table(outputs[name]["path"])
                  for name in ("enterprise_representative_link", "parcel_holder_link")}
        staged = {name: zones.read_table(prov["stages"][name]["staged_path"]) for name in ("citizen", "enterprise")}
        acc = link_accuracy(tables, staged["citizen"], staged["enterprise"], prov["truth"])
    print({k: v for k, v in acc.items() if k.endswith(("_province",))})
    for link in ("representative_citizen", "holder_citizen"):
        cross, inside = acc[f"{link}_cross_province"], acc[f"{link}_in_province"]
        assert cross["linkable"] >= 40 and inside["linkable"] >= 40, (link, cross, inside)
        assert cross["f1"] >= inside["f1"] - TOLERANCE, (link, cross, inside)
        assert cross["precision"] >= 0.99, (link, cross)
