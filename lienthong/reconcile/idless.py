"""ID-less land holders: a deterministic pass for person holders that give no document number.

Owns which holders the pass takes (person holders, not deleted, with no document number: name + birth year,
or name only), the places it compares them on, its rule, its links (`LINK_SCHEMA` of `people`, method
`unique_name`) and review lists, how its links are combined with the model's (`combine`), and the keys an
incremental run must treat as dirty for it (`dirty_keys`, `holders_to_relink`).

The rule. A holder is compared with the citizens of the population registry on its folded full name
(`name_fold`, as `people` folds it):

- with a birth year (`RULE_BIRTH_YEAR`): the citizens of that name and birth year whose residence is in the
  holder's province (the land registry's `province_code`; the citizen's province is the 2025 province of its
  residence commune: the staged 2025 code, else the pre-2025 code converted through `adminunits`);
- without one (`RULE_COMMUNE`): the citizens of that name whose residence commune is a commune of one of the
  holder's parcels (holder -> certificate -> parcel; deleted rows left out), and, with `address` (default),
  those living at the holder's own address (same folded commune name, 2025 or pre-2025, and same street /
  village). A parcel keeps the code it was surveyed under (`commune_code_original`, pre-2025 or 2025) beside
  its 2025 code, and an old commune split in 2025 went to several 2025 communes: a parcel's communes are its
  2025 code plus every 2025 target of an old original code, a citizen's its 2025 code plus the targets of an
  old residence code; they match on any shared code.

The candidate (`pick`): the only citizen found, or, of several namesakes, the only one living at the holder's
address (`address`). Candidates the registry's own dedupe puts in one cluster (`dedupe.citizen_duplicates`,
when given) are one person, counted once under the cluster's survivor.

Must the model agree? Yes. Measured on generated provinces (benchmarks/bench_idless.py ->
benchmarks/results/idless-holders.json; 100,000 citizens, default noise, 1,243 ID-less person holders), the
rule alone accepts wrong citizens where the model accepts none: name + birth year + province at precision
0.993 (5 wrong of 674), name in a parcel's commune at 0.09 (31 of 34 wrong: the sandbox draws a parcel's
commune independently of where its holder lives, so a namesake who happens to live there is as likely as the
holder; real rural holders live near their land more often, but nothing guarantees it), name in a parcel's
commune or at the holder's address at 0.986 (4 of 291). Every wrong one was a holder whose person is not in the registry at all (from
another province) with a namesake who is: no rule on the registry alone can see that, and 0.99 on a link that
names a citizen to a land title is too low. The model ranked first, at >= review, 952 of the 965 links the
rule accepted, and none of the 9 wrong ones. So with `model_links` (the model's links for the same holders,
`people.link_people(...).links`) a candidate is accepted only when the model's best candidate is the same
person at a score >= the review band: the rule settles what the model left to review (a common name whose
best candidate the registry shows to be the only one of that name and year in the province, or the only one
at that address). Measured so, ID-less holders' recall went from 0.934 (the model alone) to 0.969 at
precision 1.0 (review 53 -> 36); all person holders' from 0.99846 to 0.99913. Without `model_links` the rule
alone decides (kept to measure it). With no birth year, the parcel's commune adds nearly nothing in the
sandbox (3 links); the address does the work.

Outcome per holder with a candidate or namesakes: `accept` (score: the model's probability for the pair; 1.0
without the model; `right_id` the model's record of that person); otherwise `review`, score 1 / (number of
candidates), right_id the pick (runner-up: the model's best candidate when it differs) or the first two
namesakes, and the whole sorted list in the candidates table (`CANDIDATE_SCHEMA`). No candidate: no row.
`combine` then keeps, per holder: an accepted `unique_name` link, else an accepted model link, else the
`unique_name` review row, else the model's row. Wiring: the model links every person holder as before; the
pass runs on its result; `combine` gives the holder links (see `link_idless`).

Incremental runs: a holder's result depends on every citizen that shares its key, not only on the one it was
linked to: a registry change that adds, removes or edits a citizen can turn a unique name into two namesakes
(an accepted link must become a review) or the other way round, with no change on the land side. So a changed
citizen record dirties its keys (`dirty_keys`: (name_fold, birth_year, province_code), (name_fold,
commune_code) and (name_fold, commune_name), from the record's old AND new version, so a move or a rename
dirties both places), and every ID-less holder with a dirty key must be relinked (`holders_to_relink`),
besides the holders whose own record, certificates or parcels changed and those whose model link changed
(the gate reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from lienthong import adminunits
from lienthong.duck import session
from lienthong.reconcile.people import LINK_SCHEMA, PERSON_COLUMNS, PERSON_SCHEMA, LinkBands
from lienthong.settings import Settings
from lienthong.standardize.common import distinct_rows, expand

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

METHOD = "unique_name"
ACCEPT_SCORE = 1.0  # one candidate; n candidates score 1 / n (the chance that one of n namesakes is the holder)

# Which key found a holder's candidates (`rule_of`).
RULE_BIRTH_YEAR = "name_birth_year_province"
RULE_COMMUNE = "name_commune"

CANDIDATE_SCHEMA = pa.schema([("left_id", pa.string()), ("candidates", pa.list_(pa.string()))])
PLACE_FIELDS = [pa.field("province_code", pa.string()), pa.field("commune_codes", pa.list_(pa.string()))]
# The left side: the person shape, the holder's province and the 2025 communes of its parcels.
INPUT_SCHEMA = pa.schema([*PERSON_SCHEMA, pa.field("province_code", pa.string()),
                          pa.field("parcel_communes", pa.list_(pa.string()))])
# The right side: the person shape, the citizen's 2025 province and 2025 residence commune(s).
REGISTRY_SCHEMA = pa.schema([*PERSON_SCHEMA, *PLACE_FIELDS])
# One dirty key per row: (name_fold, birth_year, province_code), (name_fold, commune_code) or (name_fold,
# commune_name), the other columns null.
DIRTY_KEY_SCHEMA = pa.schema([("name_fold", pa.string()), ("birth_year", pa.int32()),
                              ("province_code", pa.string()), ("commune_code", pa.string()),
                              ("commune_name", pa.string())])


# --- places ----------------------------------------------------------------------------------------------


@cache
def _province_of_2025() -> dict[str, str]:
    return {code: c.province_code for code, c in adminunits.new_communes().items()}


def _places_one(original: str | None, code_2025: str | None) -> tuple[str | None, list[str] | None]:
    """(2025 province, sorted 2025 commune codes) of one (original code, 2025 code) pair."""
    new = _province_of_2025()
    codes: set[str] = set()
    if code_2025:
        codes.add(code_2025)
    if original and original != code_2025:
        conv = adminunits.to_2025(original)
        if conv is not None:
            codes.update(conv.targets)
        elif original in new:
            codes.add(original)
    if code_2025 in new:
        province: str | None = new[code_2025]
    elif original and (conv2 := adminunits.to_2025(original)) is not None:
        province = new.get(conv2.default)
    else:
        province = new.get(original) if original else None
    return province, sorted(codes) or None


def commune_places(original: pa.Array | pa.ChunkedArray, code_2025: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(2025 province code, list of 2025 commune codes) per row, from a commune code as recorded (pre-2025 or
    2025) and its staged 2025 code; computed once per distinct pair."""
    combos, index = distinct_rows(original, code_2025)
    province, codes = expand([_places_one(o, c) for o, c in combos], index,
                             (pa.string(), pa.list_(pa.string())))
    return province, codes


# --- inputs ----------------------------------------------------------------------------------------------


def idless_holders(holders: pa.Table) -> pa.Table:
    """The rows the pass takes: person holders, not deleted, with no document number (null or blank)."""
    person = pc.fill_null(pc.equal(holders["holder_type"], "CA_NHAN"), False)
    alive = pc.invert(pc.fill_null(holders["deleted"], False))
    no_doc = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(holders["document_number"]), ""), True)
    return holders.filter(pc.and_(pc.and_(person, alive), no_doc))


def idless_inputs(holders: pa.Table, certificates: pa.Table, parcels: pa.Table, *,
                  settings: Settings | None = None) -> pa.Table:
    """The ID-less person holders among `holders` (staged land_holder rows; any others are left out) in the
    person shape (`sources.holders_as_people`: unique_id `<province_code>:<holder_id>`), plus `province_code`
    and `parcel_communes` (sorted 2025 commune codes of the parcels of its certificates). `INPUT_SCHEMA`."""
    from lienthong.reconcile.sources import holders_as_people

    idless = idless_holders(holders)
    people = holders_as_people(idless)
    for column in ("id_number", "legacy_id"):  # a blank number is no number
        people = people.set_column(people.schema.get_field_index(column), PERSON_SCHEMA.field(column),
                                   pa.nulls(people.num_rows, pa.string()))
    prov, communes = commune_places(parcels["commune_code_original"], parcels["commune_code_2025"])
    parcel_places = pa.table({
        "province_code": parcels["province_code"], "parcel_id": parcels["parcel_id"],
        "deleted": pc.fill_null(parcels["deleted"], False), "communes": communes,
    })
    certs = certificates.select(["province_code", "holder_id", "parcel_id", "deleted"])
    keys = pa.table({"unique_id": people["unique_id"], "province_code": idless["province_code"],
                     "holder_id": idless["holder_id"]})
    with session(settings, purpose="idless-inputs") as con:
        con.register("k", keys)
        con.register("c", certs)
        con.register("p", parcel_places)
        found = con.execute("""
            SELECT k.unique_id, list_sort(list_distinct(flatten(list(p.communes)))) AS parcel_communes
            FROM k JOIN c ON c.province_code = k.province_code AND c.holder_id = k.holder_id
                   AND NOT coalesce(c.deleted, false)
                   JOIN p ON p.province_code = c.province_code AND p.parcel_id = c.parcel_id AND NOT p.deleted
            WHERE p.communes IS NOT NULL
            GROUP BY k.unique_id
        """).fetch_arrow_table()
    by_id = dict(zip(found["unique_id"].to_pylist(), found["parcel_communes"].to_pylist(), strict=True))
    parcel_communes = pa.array([by_id.get(u) or None for u in people["unique_id"].to_pylist()],
                               pa.list_(pa.string()))
    return people.append_column(INPUT_SCHEMA.field("province_code"), idless["province_code"].cast(pa.string())) \
        .append_column(INPUT_SCHEMA.field("parcel_communes"), parcel_communes)


def registry_with_places(citizens: pa.Table, registry: pa.Table | None = None) -> pa.Table:
    """The registry side: `registry` (`sources.citizens_as_people(citizens)`, computed when not given; same
    rows, same order) plus each citizen's 2025 `province_code` and `commune_codes` from its residence
    commune. `REGISTRY_SCHEMA`."""
    if registry is None:
        from lienthong.reconcile.sources import citizens_as_people

        registry = citizens_as_people(citizens)
    if registry.num_rows != citizens.num_rows:
        raise ValueError(f"registry has {registry.num_rows} rows for {citizens.num_rows} citizens")
    province, communes = commune_places(citizens["residence_commune_code"], citizens["residence_commune_code_2025"])
    return registry.select(PERSON_COLUMNS).append_column(PLACE_FIELDS[0], province) \
        .append_column(PLACE_FIELDS[1], communes)


# --- the pass --------------------------------------------------------------------------------------------


def _candidates(con: DuckDBPyConnection, *, duplicates: bool, address: bool) -> None:
    """Table `cand` (left_id, candidates sorted, n, pick) from tables `l` and `r` (and `dup`, when
    `duplicates`); `pick` is the candidate the rule would link, null when it has none."""
    survivor = "coalesce(d.survivor_key, r.unique_id)" if duplicates else "r.unique_id"
    dup_join = "LEFT JOIN dup d ON d.record_key = r.unique_id" if duplicates else ""
    same_address = ("(l.commune IS NOT NULL AND l.street IS NOT NULL AND r.street = l.street "
                    "AND (r.commune = l.commune OR list_contains(r.communes, l.commune)))")
    by_address = f"OR {same_address}" if address else ""
    con.execute(f"""
        CREATE TABLE pairs AS
        SELECT l.unique_id AS left_id, {survivor} AS right_id, {same_address} AS at_address
        FROM l JOIN r ON r.name_fold = l.name_fold AND r.birth_year = l.birth_year
                     AND r.province_code = l.province_code {dup_join}
        WHERE l.birth_year IS NOT NULL
        UNION ALL
        SELECT l.unique_id, {survivor}, {same_address}
        FROM l JOIN r ON r.name_fold = l.name_fold {dup_join}
        WHERE l.birth_year IS NULL
          AND (coalesce(list_has_any(r.commune_codes, l.parcel_communes), false) {by_address})
    """)
    narrow = "count(DISTINCT right_id) FILTER (WHERE at_address) = 1" if address else "false"
    con.execute(f"""
        CREATE TABLE cand AS
        SELECT left_id, list(DISTINCT right_id ORDER BY right_id) AS candidates,
               count(DISTINCT right_id)::INTEGER AS n,
               -- the one candidate; of several namesakes, the only one living at the holder's address
               CASE WHEN count(DISTINCT right_id) = 1 THEN min(right_id)
                    WHEN {narrow} THEN min(right_id) FILTER (WHERE at_address) END AS pick
        FROM pairs GROUP BY left_id
    """)


def link_idless(left: pa.Table, registry: pa.Table, bands: LinkBands | None = None, *,
                model_links: pa.Table | None = None, duplicates: pa.Table | None = None,
                address: bool = True, settings: Settings | None = None) -> tuple[pa.Table, pa.Table]:
    """Link ID-less holders (`idless_inputs`) to the registry (`registry_with_places`) by the unique-name
    rule (module docstring). Returns (links, candidates):

    - links, `LINK_SCHEMA`, method `unique_name`, one row per holder with at least one candidate: `accept`
      when the rule picks one citizen and (with `model_links`) the model's best candidate for the holder is
      that person (or a duplicate record of it) at a score >= `bands.review`; else `review`;
    - candidates, `CANDIDATE_SCHEMA`: the sorted candidate citizen IDs of every review row.

    `model_links`: the model's links for (at least) these holders; without it the rule alone decides (not
    precise enough: see the module docstring). A left row that carries an ID (`id_number` or `legacy_id`) or
    no name is not touched. `duplicates`: the registry's duplicate clusters (`dedupe.citizen_duplicates`).
    `address`: also look for, and narrow namesakes to, citizens living at the holder's own address.

    In `reconcile.run.reconcile_tables`, after the model has linked the person holders (`holder_result`)::

        left = idless.idless_inputs(person_holders, staged["certificate"], staged["parcel"], settings=settings)
        idless_links, idless_review = idless.link_idless(
            left, idless.registry_with_places(cit, registry), bands, model_links=holder_result.links,
            duplicates=cdup, settings=settings)
        holder_links = idless.combine(idless_links, holder_result.links, settings=settings)
    """
    bands = bands or LinkBands()
    with session(settings, purpose="link-idless") as con:
        con.register("left_in", left.select([*PERSON_COLUMNS, "province_code", "parcel_communes"]))
        con.register("right_in", registry.select([*PERSON_COLUMNS, "province_code", "commune_codes"]))
        con.execute("""CREATE TABLE l AS SELECT * FROM left_in
                       WHERE id_number IS NULL AND legacy_id IS NULL AND name_fold IS NOT NULL""")
        con.execute("CREATE TABLE r AS SELECT * FROM right_in WHERE name_fold IS NOT NULL")
        if duplicates is not None:
            con.register("dup", duplicates.select(["record_key", "survivor_key"]))
        else:
            con.execute("CREATE TABLE dup (record_key VARCHAR, survivor_key VARCHAR)")
        _candidates(con, duplicates=duplicates is not None, address=address)
        if model_links is not None:
            con.register("m_in", model_links.select(["left_id", "right_id", "score"]))
            con.execute("""CREATE TABLE m AS SELECT m_in.*, coalesce(d.survivor_key, m_in.right_id) AS survivor
                           FROM m_in LEFT JOIN dup d ON d.record_key = m_in.right_id""")
            agree = f"(m.survivor = c.pick AND m.score >= {float(bands.review)!r})"
            model_join = "LEFT JOIN m ON m.left_id = c.left_id"
        else:
            agree, model_join = "true", ""
        gated = model_links is not None
        con.execute(f"""
            CREATE TABLE out AS
            SELECT c.left_id, c.candidates, c.n, c.pick, c.pick IS NOT NULL AND coalesce({agree}, false) AS accepted,
                   {"m.right_id" if gated else "NULL::VARCHAR"} AS model_id,
                   {"m.score" if gated else "NULL::DOUBLE"} AS model_score
            FROM cand c {model_join}
        """)
        links = con.execute(f"""
            SELECT left_id,
                   CASE WHEN accepted THEN coalesce(model_id, pick) ELSE coalesce(pick, candidates[1]) END AS right_id,
                   '{METHOD}' AS method,
                   CASE WHEN accepted THEN coalesce(model_score, {ACCEPT_SCORE}::DOUBLE)
                        ELSE {ACCEPT_SCORE}::DOUBLE / n END AS score,
                   CASE WHEN accepted THEN 'accept' ELSE 'review' END AS band,
                   CASE WHEN accepted THEN NULL
                        WHEN pick IS NULL THEN candidates[2]
                        WHEN model_id IS DISTINCT FROM pick THEN model_id END AS runner_up_id,
                   CASE WHEN accepted THEN NULL
                        WHEN pick IS NULL THEN {ACCEPT_SCORE}::DOUBLE / n
                        WHEN model_id IS DISTINCT FROM pick THEN model_score END AS runner_up_score
            FROM out ORDER BY left_id
        """).fetch_arrow_table().cast(LINK_SCHEMA)
        review = con.execute("SELECT left_id, candidates FROM out WHERE NOT accepted ORDER BY left_id") \
            .fetch_arrow_table().cast(CANDIDATE_SCHEMA)
    return links, review


def rule_of(left: pa.Table) -> pa.Array:
    """Which rule a left row is judged by: `RULE_BIRTH_YEAR` with a birth year, else `RULE_COMMUNE`."""
    return pc.if_else(pc.is_valid(left["birth_year"]), RULE_BIRTH_YEAR, RULE_COMMUNE)


def still_to_link(people_left: pa.Table, idless_links: pa.Table) -> pa.Table:
    """The rows of `people_left` (every person holder, `sources.holders_as_people`) the model must still
    link: all but those the pass accepted."""
    accepted = idless_links.filter(pc.equal(idless_links["band"], "accept"))["left_id"]
    return people_left.filter(pc.invert(pc.is_in(people_left["unique_id"], value_set=accepted.combine_chunks())))


def combine(idless_links: pa.Table, model_links: pa.Table, *, settings: Settings | None = None) -> pa.Table:
    """One row per holder: the pass's accepted link, else the model's accepted link, else the pass's review
    row, else the model's row (review or reject). `LINK_SCHEMA`, in left_id order."""
    with session(settings, purpose="link-idless") as con:
        con.register("a", idless_links.select(LINK_SCHEMA.names).cast(LINK_SCHEMA))
        con.register("b", model_links.select(LINK_SCHEMA.names).cast(LINK_SCHEMA))
        return con.execute("""
            SELECT * EXCLUDE (rk) FROM (
              SELECT *, CASE WHEN band = 'accept' THEN 0 ELSE 2 END AS rk FROM a
              UNION ALL
              SELECT *, CASE WHEN band = 'accept' THEN 1 ELSE 3 END FROM b)
            QUALIFY row_number() OVER (PARTITION BY left_id ORDER BY rk) = 1
            ORDER BY left_id
        """).fetch_arrow_table().cast(LINK_SCHEMA)


# --- incremental runs ------------------------------------------------------------------------------------


def dirty_keys(records: pa.Table, *, settings: Settings | None = None) -> pa.Table:
    """The keys a change of these registry records touches (`REGISTRY_SCHEMA` rows: pass the old and the new
    version of every changed citizen): (name_fold, birth_year, province_code) per record with a birth year
    and a province, (name_fold, commune_code) per 2025 residence commune code and (name_fold, commune_name)
    per folded residence commune name (2025 and pre-2025). Distinct rows, `DIRTY_KEY_SCHEMA`. Every ID-less
    holder with one of these keys must be relinked (`holders_to_relink`)."""
    with session(settings, purpose="idless-dirty") as con:
        con.register("rec", records.select(["name_fold", "birth_year", "province_code", "commune_codes",
                                            "commune", "communes"]))
        return con.execute("""
            SELECT DISTINCT name_fold, birth_year, province_code, NULL::VARCHAR AS commune_code,
                   NULL::VARCHAR AS commune_name FROM rec
            WHERE name_fold IS NOT NULL AND birth_year IS NOT NULL AND province_code IS NOT NULL
            UNION
            SELECT DISTINCT name_fold, NULL::INTEGER, NULL::VARCHAR, unnest(commune_codes), NULL FROM rec
            WHERE name_fold IS NOT NULL AND commune_codes IS NOT NULL
            UNION
            SELECT DISTINCT name_fold, NULL::INTEGER, NULL::VARCHAR, NULL,
                   unnest(list_distinct(list_filter(list_concat([commune], coalesce(communes, [])), x -> x IS NOT NULL)))
            FROM rec WHERE name_fold IS NOT NULL AND (commune IS NOT NULL OR communes IS NOT NULL)
            ORDER BY ALL
        """).fetch_arrow_table().cast(DIRTY_KEY_SCHEMA)


def holders_to_relink(left: pa.Table, dirty: pa.Table, *, settings: Settings | None = None) -> pa.Array:
    """unique_ids of the ID-less holders (`idless_inputs`) with a key among `dirty` (`dirty_keys`), sorted. A
    holder with a birth year is keyed by (name, year, province) only; one without, by (name, commune) for its
    parcels' communes and its address commune (whether or not `address` was used: a superset is safe)."""
    with session(settings, purpose="idless-dirty") as con:
        con.register("l", left.select(["unique_id", "name_fold", "birth_year", "province_code", "parcel_communes",
                                       "commune"]))
        con.register("d", dirty.select(DIRTY_KEY_SCHEMA.names))
        out = con.execute("""
            SELECT DISTINCT l.unique_id FROM l JOIN d ON d.name_fold = l.name_fold
            WHERE (l.birth_year IS NOT NULL AND d.birth_year = l.birth_year AND d.province_code = l.province_code)
               OR (l.birth_year IS NULL AND d.commune_code IS NOT NULL
                   AND coalesce(list_contains(l.parcel_communes, d.commune_code), false))
               OR (l.birth_year IS NULL AND d.commune_name IS NOT NULL AND d.commune_name = l.commune)
            ORDER BY 1
        """).fetch_arrow_table()
    return out["unique_id"].combine_chunks()


def counts(links: pa.Table, left: pa.Table) -> dict[str, int]:
    """`unique_name_accept`, `unique_name_review` and `idless_no_candidate` (left rows with no row)."""
    bands: Sequence[str | None] = links["band"].to_pylist()
    n_accept = sum(1 for b in bands if b == "accept")
    return {"idless_holders": left.num_rows, f"{METHOD}_accept": n_accept,
            f"{METHOD}_review": len(bands) - n_accept, "idless_no_candidate": left.num_rows - len(bands)}
