"""Person linkage: match person records of one source (legal representatives, land holders, any table in the
person shape) to the population registry.

Owns the person shape every source is mapped into (`PERSON_COLUMNS`), the exact passes (12-digit personal
ID, then the legacy 9-digit ID through the registry's old-ID field) and the probabilistic pass for the rest:
a Fellegi-Sunter model in Splink (DuckDB backend; its scoring on Spark with `LIENTHONG_LINKAGE_ENGINE=spark`,
`sparkengine`) over folded name (with term-frequency adjustment),
sorted name tokens (swapped order), date of birth / birth year, the ID digits (a mistyped ID is still
close), commune and street. The model is estimated on the run's own data (u by random sampling, m by
expectation maximisation), so it needs no labelled data and adapts to each source's noise.

Every link carries its method (`exact_id`, `legacy_id`, `probabilistic`), a score (match probability) and a
band (`accept`, `review`, `reject`) from `LinkBands`. The same code path links FEBRL4 in the benchmark.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from lienthong.duck import session
from lienthong.settings import Settings, load_settings
from lienthong.standardize.common import map_distinct
from lienthong.standardize.text import fold_key

log = logging.getLogger(__name__)

# The person shape. `unique_id` is the record's key in its source; every other column may be null.
PERSON_SCHEMA = pa.schema([
    ("unique_id", pa.string()),
    ("id_number", pa.string()),  # the current personal ID as given (12 digits for CCCD)
    ("legacy_id", pa.string()),  # an old 9-digit CMND, when the record gave one (or holds one)
    ("name_fold", pa.string()),  # folded full name: "nguyen van an"
    ("name_sorted", pa.string()),  # its tokens sorted: swapped name order folds equal
    ("family_name", pa.string()),
    ("given_name", pa.string()),
    ("birth_date", pa.date32()),  # full date when known to the day
    ("birth_year", pa.int32()),
    ("commune", pa.string()),  # folded commune name of the address, without "xa/phuong/thi tran"
    ("communes", pa.list_(pa.string())),  # other names the same place goes by (old and 2025 names)
    ("street", pa.string()),  # folded street / village part of the address
])
PERSON_COLUMNS = tuple(PERSON_SCHEMA.names)

_COMMUNE_PREFIXES = ("thi tran ", "phuong ", "xa ", "dac khu ")


@dataclass(frozen=True)
class LinkBands:
    """The three bands of the probabilistic pass: >= accept links, >= review is for a person to decide."""

    accept: float = 0.95
    review: float = 0.80
    # A candidate whose runner-up is this close (in match weight, bits) is ambiguous: it goes to review.
    min_margin_bits: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 < self.review <= self.accept <= 1.0:
            raise ValueError(f"link bands need 0 < review ({self.review}) <= accept ({self.accept}) <= 1")

    def band(self, probability: float | None) -> str:
        if probability is None:
            return "reject"
        if probability >= self.accept:
            return "accept"
        return "review" if probability >= self.review else "reject"


def fold_commune(arr: pa.Array | list[str | None]) -> pa.Array:
    """Folded commune name without its unit word ("Xã Tân Dân" -> "tan dan")."""
    folded = fold_key(arr)
    out = folded
    for prefix in _COMMUNE_PREFIXES:
        out = pc.if_else(pc.starts_with(out, prefix), pc.utf8_slice_codeunits(out, len(prefix)), out)
    return out


def _name_parts_one(folded: str) -> tuple[str | None, str | None, str | None]:
    tokens = folded.split()
    if not tokens:
        return None, None, None
    return " ".join(sorted(tokens)), tokens[0], tokens[-1]


def name_parts(names: pa.Array) -> dict[str, pa.Array]:
    """name_fold, name_sorted, family_name and given_name columns from full names (any form, any case)."""
    folded = fold_key(names)
    sorted_names, family, given = map_distinct(folded, _name_parts_one, (pa.string(),) * 3)
    return {"name_fold": folded, "name_sorted": sorted_names, "family_name": family, "given_name": given}


def person_table(columns: dict[str, Any], n: int) -> pa.Table:
    """A table in the person shape from whatever columns a source has (the rest become nulls)."""
    arrays = []
    for f in PERSON_SCHEMA:
        value = columns.get(f.name)
        if value is None:
            arrays.append(pa.nulls(n, f.type))
        else:
            arr = value if isinstance(value, pa.Array | pa.ChunkedArray) else pa.array(value)
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            arrays.append(arr.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=PERSON_SCHEMA)


def with_names(columns: dict[str, Any], full_names: pa.Array) -> dict[str, Any]:
    """`columns` plus the four name columns derived from `full_names`."""
    return {**columns, **name_parts(full_names)}


# --- the model -------------------------------------------------------------------------------------------

# The model's candidate pairs (Splink blocking rules, each an equality of these expressions over the person
# shape). Every rule pairs a name (or part of one) with a second field, so that no rule pairs a common name
# with the whole registry (66M pairs for 100k records at 1M citizens); and none pairs on one field common to a
# large share of the country (a birth date alone matched about 140 citizens per record at 5M, and 2,700 at
# 100M): the birth date goes with the given name or the family name, the ID's first six digits (place of
# birth registration, century and sex, birth year) with both names, a street with the given name. On the
# ground truth of a 5-province country these find the true pairs the keys before them found (0.1 % fewer at 5M) for the
# records the exact passes leave, from a half (1M) to a third (5M) fewer registry rows (bench_blocking.py).
BLOCKING_KEYS: tuple[tuple[str, ...], ...] = (
    ("name_fold", "birth_year"),
    ("name_sorted", "birth_year"),
    ("name_fold", "commune"),
    ("name_fold", "street"),
    ("birth_date", "given_name"),
    ("birth_date", "family_name"),
    ("family_name", "given_name", "commune"),
    ("given_name", "birth_year", "street"),
    ("substr(id_number, 1, 6)", "given_name", "family_name"),
    ("substr(id_number, 7, 6)",),
    ("legacy_id",),
)
# Every key on which a registry record can be a candidate of a left record: the exact passes' IDs and the
# model's blocking keys. A left record's link depends on the registry records sharing one of these with it
# and on nothing else of the registry (`lienthong.reconcile.linkstate` relinks on that).
CANDIDATE_KEYS: tuple[tuple[str, ...], ...] = (("id_number",), *BLOCKING_KEYS)
# The keys of the exact passes (`exact_pairs_sql`). A left record they link is scored by nothing else, so its
# candidates are the rows sharing its IDs; the blocking keys reach registry rows only through the records the
# exact passes leave (`l_rest`, which the model scores).
EXACT_KEYS: tuple[tuple[str, ...], ...] = (("id_number",), ("legacy_id",))


def _settings(link_type: Literal["link_only", "link_and_dedupe", "dedupe_only"] = "link_only", *, probability_two_random_records_match: float = 0.0001) -> Any:
    """The model's settings (Splink's SettingsCreator); the prior is given here, before the Linker exists,
    because Splink's public API sets it only through the settings (or estimates it, which we do not)."""
    from splink import SettingsCreator, block_on

    # Comparisons as plain level dicts: each level's SQL is ours (Vietnamese names, IDs, communes), and the
    # dict form is Splink's documented settings format.
    def custom(name: str, levels: list[dict[str, Any]]) -> dict[str, Any]:
        return {"output_column_name": name, "comparison_levels": levels}

    def level(sql: str, label: str, *, null: bool = False, tf: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"sql_condition": sql, "label_for_charts": label}
        if null:
            out["is_null_level"] = True
        if tf:
            out["tf_adjustment_column"] = tf
            out["tf_adjustment_weight"] = 1.0
        return out

    name = custom("name", [
        level('"name_fold_l" IS NULL OR "name_fold_r" IS NULL', "null", null=True),
        level('"name_fold_l" = "name_fold_r"', "exact", tf="name_fold"),
        level('"name_sorted_l" = "name_sorted_r"', "same words, other order"),
        level('jaro_winkler_similarity("name_fold_l", "name_fold_r") >= 0.95', "jaro-winkler >= 0.95"),
        level('"given_name_l" = "given_name_r" AND jaro_winkler_similarity("name_fold_l", "name_fold_r") >= 0.85',
              "same given name, jaro-winkler >= 0.85"),
        level("ELSE", "different"),
    ])
    birth = custom("birth", [
        level('"birth_year_l" IS NULL OR "birth_year_r" IS NULL', "null", null=True),
        level('"birth_date_l" = "birth_date_r"', "same date"),
        level('"birth_year_l" = "birth_year_r" AND "birth_date_l" IS NOT NULL AND "birth_date_r" IS NOT NULL '
              'AND (month("birth_date_l") = month("birth_date_r") OR day("birth_date_l") = day("birth_date_r"))',
              "same year, month or day differs"),
        level('"birth_year_l" = "birth_year_r"', "same year"),
        level('abs("birth_year_l" - "birth_year_r") <= 1', "one year apart"),
        level("ELSE", "different"),
    ])
    ident = custom("id", [
        level('("id_number_l" IS NULL AND "legacy_id_l" IS NULL) OR ("id_number_r" IS NULL AND "legacy_id_r" IS NULL)',
              "null", null=True),
        level('"id_number_l" = "id_number_r" OR "legacy_id_l" = "legacy_id_r"', "exact"),
        level('damerau_levenshtein("id_number_l", "id_number_r") <= 2 '
              'OR damerau_levenshtein("legacy_id_l", "legacy_id_r") <= 1', "one or two digits off"),
        level("ELSE", "different"),
    ])
    place = custom("commune", [
        level('("commune_l" IS NULL AND "communes_l" IS NULL) OR ("commune_r" IS NULL AND "communes_r" IS NULL)',
              "null", null=True),
        level('"commune_l" = "commune_r" OR list_contains("communes_r", "commune_l") '
              'OR list_contains("communes_l", "commune_r") OR list_has_any("communes_l", "communes_r")', "same commune"),
        level("ELSE", "different"),
    ])
    street = custom("street", [
        level('"street_l" IS NULL OR "street_r" IS NULL', "null", null=True),
        level('"street_l" = "street_r"', "exact"),
        level('jaro_winkler_similarity("street_l", "street_r") >= 0.9', "jaro-winkler >= 0.9"),
        level("ELSE", "different"),
    ])
    return SettingsCreator(
        link_type=link_type,
        probability_two_random_records_match=probability_two_random_records_match,
        comparisons=[name, birth, ident, place, street],
        blocking_rules_to_generate_predictions=[block_on(*key) for key in BLOCKING_KEYS],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
        max_iterations=20,
        em_convergence=0.001,
    )


TF_SCHEMA = pa.schema([("name_fold", pa.string()), ("tf_name_fold", pa.float64())])


@dataclass(frozen=True)
class LinkModel:
    """A trained person-linkage model: Splink's settings-and-parameters JSON (`splink`) and the term
    frequencies of folded names it was trained with (`tf`, TF_SCHEMA). The frequencies are frozen with the
    parameters: a record then scores the same whichever run scores it, so linking only a run's change gives
    what relinking everything with the same model gives. A name absent from `tf` gets no frequency
    adjustment."""

    splink: dict[str, Any]
    tf: pa.Table

    @cached_property
    def model_id(self) -> str:
        """Content address of the model: sha256 of the parameters and the frequencies (first 16 hex); computed
        once per model (a run asks for it per link type, per table written and per ledger row)."""
        import hashlib
        import json

        h = hashlib.sha256(json.dumps(self.splink, sort_keys=True).encode("utf-8"))
        tf = self.tf.sort_by("name_fold")
        for name, freq in zip(tf["name_fold"].to_pylist(), tf["tf_name_fold"].to_pylist(), strict=True):
            h.update(f"{name}\t{freq!r}\n".encode())
        return h.hexdigest()[:16]


@dataclass
class LinkResult:
    """The links of one left table to one right table, plus what it took."""

    links: pa.Table  # LINK_SCHEMA: left_id, right_id, method, score, band, runner_up_id, runner_up_score
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    # the model that scored the residue: the one given, or the one trained here; None when nothing was left
    # for the model to score and none was given
    model: LinkModel | None = None


LINK_SCHEMA = pa.schema([
    ("left_id", pa.string()),
    ("right_id", pa.string()),
    ("method", pa.string()),
    ("score", pa.float64()),
    ("band", pa.string()),
    ("runner_up_id", pa.string()),
    ("runner_up_score", pa.float64()),
])


def link_people(
    left: pa.Table,
    right: pa.Table,
    bands: LinkBands | None = None,
    *,
    train_sample: int = 200_000,
    seed: int = 42,
    settings: Settings | None = None,
    model: LinkModel | None = None,
) -> LinkResult:
    """Link each left person record to at most one right record (the registry).

    With `model`, the residue is scored with it (nothing is trained: a daily run reuses the persisted
    model); without, a model is trained on these tables and returned in the result.

    Exact personal ID first, then legacy ID, each confirmed by the name or the birth year agreeing (a
    mistyped ID that happens to be another citizen's is not confirmed and goes on to the model); then the
    Splink model for the rest. Returns one row per left record: linked (`accept`), for review, or not
    linked (`reject`, right_id null when there was no candidate at all). DuckDB (and Splink on it) runs in
    one session bounded by the settings (`lienthong.duck`; the environment's when none are given); with
    `settings.linkage_engine` "spark" the model's scoring runs on Spark (`sparkengine`), the rest here."""
    bands = bands or LinkBands()
    settings = settings or load_settings()
    t0 = time.monotonic()
    seconds: dict[str, float] = {}
    with session(settings, purpose="link-people") as con:
        con.register("left_in", left.select(PERSON_COLUMNS))
        con.register("right_in", right.select(PERSON_COLUMNS))
        con.execute("CREATE TABLE l AS SELECT * FROM left_in")
        con.execute("CREATE TABLE r AS SELECT * FROM right_in")
        exact = _exact_links(con)
        seconds["exact"] = time.monotonic() - t0
        con.execute("CREATE TABLE l_rest AS SELECT * FROM l WHERE unique_id NOT IN (SELECT left_id FROM exact_links)")
        n_rest = _count(con, "SELECT count(*) FROM l_rest")
        t1 = time.monotonic()
        prob, used = (_probabilistic_links(con, bands, model=model, train_sample=train_sample, seed=seed,
                                           settings=settings)
                      if n_rest else (None, model))
        seconds["probabilistic"] = time.monotonic() - t1
    parts = [exact]
    if prob is not None:
        parts.append(prob)
    links = pa.concat_tables([p.cast(LINK_SCHEMA) for p in parts]) if parts else LINK_SCHEMA.empty_table()
    # left records with no candidate at all: rejected, no right id
    ids = left.column("unique_id")
    missing = ids.filter(pc.invert(pc.is_in(ids, value_set=links.column("left_id").combine_chunks())))
    if len(missing):
        n = len(missing)
        links = pa.concat_tables([links, pa.table({
            "left_id": missing.cast(pa.string()),
            "right_id": pa.nulls(n, pa.string()),
            "method": pa.array(["probabilistic"] * n),
            "score": pa.nulls(n, pa.float64()),
            "band": pa.array(["reject"] * n),
            "runner_up_id": pa.nulls(n, pa.string()),
            "runner_up_score": pa.nulls(n, pa.float64()),
        }, schema=LINK_SCHEMA)])
    counts = link_counts(links, right.num_rows)
    seconds["total"] = time.monotonic() - t0
    log.info("linked %d records to %d: %s in %.1f s", left.num_rows, right.num_rows, counts, seconds["total"])
    return LinkResult(links=links, seconds=seconds, counts=counts, model=used)


def method_band_counts(links: pa.Table) -> dict[str, int]:
    """Links per `<method>_<band>` of a LINK_SCHEMA table."""
    groups = pa.TableGroupBy(links, ["method", "band"]).aggregate([("left_id", "count")]).to_pylist()
    return {f"{row['method']}_{row['band']}": row["left_id_count"] for row in groups}


def link_counts(links: pa.Table, registry_rows: int) -> dict[str, int]:
    """What `link_people` reports of a person link table (one row per left record): left and right rows and
    links per method and band, every person method and band present."""
    zero = {f"{m}_{b}": 0 for m in ("exact_id", "legacy_id", "probabilistic") for b in ("accept", "review", "reject")}
    return {"left": links.num_rows, "right": registry_rows, **zero, **method_band_counts(links)}


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def exact_pairs_sql(left: str = "l", right: str = "r") -> str:
    """SQL: the confirmed pairs of the exact passes between person tables `left` and `right` (left_id,
    right_id, method, pass): the same personal ID, then the same legacy ID, each confirmed unless the name
    AND the birth year both disagree. Whether a left record is linked exactly depends only on the right
    rows sharing one of its IDs (`lienthong.reconcile.partitions` relies on it)."""
    return f"""
        WITH cand AS (
          SELECT l.unique_id AS left_id, r.unique_id AS right_id, 'exact_id' AS method, 1 AS pass,
                 l.name_fold AS ln, r.name_fold AS rn, l.name_sorted AS ls, r.name_sorted AS rs,
                 l.birth_year AS ly, r.birth_year AS ry
          FROM {left} l JOIN {right} r ON l.id_number = r.id_number
          UNION ALL
          SELECT l.unique_id, r.unique_id, 'legacy_id', 2, l.name_fold, r.name_fold, l.name_sorted, r.name_sorted,
                 l.birth_year, r.birth_year
          FROM {left} l JOIN {right} r ON l.legacy_id = r.legacy_id
        )
        SELECT left_id, right_id, method, pass FROM cand
        WHERE ln IS NULL OR rn IS NULL OR ls = rs OR jaro_winkler_similarity(ln, rn) >= 0.85
           OR (ly IS NOT NULL AND ly = ry)
    """


def _exact_links(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Exact passes. A key shared by several right records (the registry's own duplicates) links to the
    first of them in key order; a key match whose name AND birth year both disagree is not confirmed."""
    con.execute(f"""
        CREATE TABLE exact_links AS
        SELECT left_id, right_id, method, 1.0::DOUBLE AS score, 'accept' AS band,
               NULL::VARCHAR AS runner_up_id, NULL::DOUBLE AS runner_up_score
        FROM ({exact_pairs_sql()})
        QUALIFY row_number() OVER (PARTITION BY left_id ORDER BY pass, right_id) = 1
    """)
    return con.execute("SELECT * FROM exact_links").fetch_arrow_table()


# Pairs the model scores below this probability are not candidates at all (not even runners-up).
PREDICT_THRESHOLD = 0.01


def name_frequencies(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The term frequencies of `name_fold` in the registry table `r` (TF_SCHEMA, in name order): a name
    common among citizens is weak evidence anywhere, whichever source it comes from."""
    return con.execute("""
        SELECT name_fold, count(*)::DOUBLE / sum(count(*)) OVER () AS tf_name_fold
        FROM r WHERE name_fold IS NOT NULL GROUP BY name_fold ORDER BY name_fold
    """).fetch_arrow_table().cast(TF_SCHEMA)


def register_frequencies(con: duckdb.DuckDBPyConnection, db: Any, tf: pa.Table, name: str = "tf_name") -> Any:
    """`tf` as table `name` of the session, registered with Splink (`db`) as the lookup of `name_fold`."""
    con.register("tf_name_in", tf.cast(TF_SCHEMA))
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM tf_name_in")
    con.unregister("tf_name_in")
    return db.register(name, table_name=f"{name}_registered")


def score_rest(db: Any, model: dict[str, Any], tf: Any) -> tuple[Any, Any]:
    """Score table `l_rest` against the whole registry `r` with a trained model (Splink's JSON) and its
    registered frequencies: (the scoring Linker, its predictions). The run scores through here, and
    `explain` rescores one record through here."""
    from splink import Linker

    rest, registry = db.register("l_rest", dataset_display_name="left_rest"), db.register("r", dataset_display_name="right_all")
    scorer = Linker([rest, registry], model, log_level=logging.WARNING)
    scorer.table_management.register_term_frequency_lookup(tf, "name_fold")
    pred = scorer.inference.predict_between(rest, registry, threshold_match_probability=PREDICT_THRESHOLD,
                                            warning_mode="never")
    return scorer, pred


def _probabilistic_links(
    con: duckdb.DuckDBPyConnection, bands: LinkBands, *, model: LinkModel | None, train_sample: int, seed: int,
    settings: Settings,
) -> tuple[pa.Table, LinkModel]:
    from splink import DuckDBAPI

    db = DuckDBAPI(connection=con)
    if model is None:
        # On DuckDB whatever the engine: a model is Splink's JSON and frozen frequencies, persisted and scored
        # with by either engine (`sparkengine` translates its SQL), so only the scoring below depends on it.
        model = train(con, db, train_sample=train_sample, seed=seed)
    # Score only the left records the exact passes left over, against the whole registry: the candidate pairs
    # (left_id, right_id, score = match probability, weight = match weight) in table `prob_pairs`.
    t3 = time.monotonic()
    if settings.linkage_engine == "spark":
        from lienthong.reconcile import sparkengine

        con.register("spark_pairs", sparkengine.score_rest(con, model.splink, model.tf, settings=settings,
                                                           threshold=PREDICT_THRESHOLD))
        con.execute("CREATE TABLE prob_pairs AS SELECT * FROM spark_pairs")
        con.unregister("spark_pairs")
    else:
        _, pred = score_rest(db, model.splink, register_frequencies(con, db, model.tf))
        # unique_id_l / _r: which side is the left table depends on Splink's ordering; normalise.
        con.execute(f"""
            CREATE TABLE prob_pairs AS
            SELECT CASE WHEN source_dataset_l = 'left_rest' THEN unique_id_l ELSE unique_id_r END AS left_id,
                   CASE WHEN source_dataset_l = 'left_rest' THEN unique_id_r ELSE unique_id_l END AS right_id,
                   match_probability AS score, match_weight AS weight
            FROM {pred.physical_name}
        """)
    log.info("scored %s candidate pairs (%s) in %.1f s", _count(con, "SELECT count(*) FROM prob_pairs"),
             settings.linkage_engine, time.monotonic() - t3)
    rows = con.execute(f"""
        WITH ranked AS (
          SELECT *, row_number() OVER (PARTITION BY left_id ORDER BY weight DESC, right_id) AS rk
          FROM prob_pairs
        )
        SELECT a.left_id, a.right_id, 'probabilistic' AS method, a.score,
               CASE WHEN a.score >= {bands.accept}
                         AND (b.weight IS NULL OR a.weight - b.weight >= {bands.min_margin_bits}) THEN 'accept'
                    WHEN a.score >= {bands.review} THEN 'review'
                    ELSE 'reject' END AS band,
               b.right_id AS runner_up_id, b.score AS runner_up_score
        FROM ranked a LEFT JOIN ranked b ON b.left_id = a.left_id AND b.rk = 2
        WHERE a.rk = 1
    """).fetch_arrow_table()
    return rows, model



def train(con: duckdb.DuckDBPyConnection, db: Any, *, train_sample: int = 200_000, seed: int = 42) -> LinkModel:
    """Train the model on the session's left table `l`, registry `r` and exact links `exact_links`: the
    name frequencies of the registry, u by random sampling, m by expectation maximisation. A daily run does
    not call this when a model is persisted (`lienthong.reconcile.models`); retraining is a command."""
    from splink import Linker, block_on

    # Training data: a sample of left records, their ID partners, and a random sample of the registry. Two
    # EM passes: pairs sharing an ID (mostly true matches) give the m values of name, birth and place;
    # pairs sharing name and birth year give those of the ID itself. Neither needs the whole registry, and
    # joining the whole registry to itself inside Splink's link_only blocking is what costs time.
    con.execute(f"CREATE TABLE l_train AS SELECT * FROM l USING SAMPLE reservoir({int(train_sample)} ROWS) "
                f"REPEATABLE ({int(seed)})")
    con.execute(f"""
        CREATE TABLE r_train AS
        SELECT * FROM r WHERE id_number IN (SELECT id_number FROM l_train)
                          OR legacy_id IN (SELECT legacy_id FROM l_train)
        UNION
        SELECT * FROM (SELECT * FROM r USING SAMPLE reservoir({int(train_sample)} ROWS) REPEATABLE ({int(seed)}))
    """)
    tf = register_frequencies(con, db, name_frequencies(con), "tf_name_train")
    n_left = _count(con, "SELECT count(*) FROM l")
    n_right = _count(con, "SELECT count(*) FROM r")
    n_id_matches = _count(con, "SELECT count(*) FROM exact_links")
    # Prior: the share of left records with a partner in the registry (estimated by the share the exact
    # passes linked; a lower bound), spread over the registry.
    expected = n_id_matches / max(1, n_left)
    prior = max(min(1.0, expected / max(1, n_right)), 1e-12)
    linker = Linker([db.register("l_train", dataset_display_name="left"),
                     db.register("r_train", dataset_display_name="right")],
                    _settings(probability_two_random_records_match=prior), log_level=logging.WARNING)
    linker.table_management.register_term_frequency_lookup(tf, "name_fold")
    t0 = time.monotonic()
    linker.training.estimate_u_using_random_sampling(max_pairs=3e6, seed=seed)
    t1 = time.monotonic()
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("id_number"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("name_fold", "birth_year"))
    t2 = time.monotonic()
    splink_model = linker.misc.save_model_to_json()
    log.info("model trained: u in %.1f s, m (EM) in %.1f s; prior %.3g", t1 - t0, t2 - t1,
             splink_model["probability_two_random_records_match"])
    return LinkModel(splink=splink_model, tf=con.execute("SELECT * FROM tf_name_train").fetch_arrow_table().cast(TF_SCHEMA))

