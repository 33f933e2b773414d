"""Parsing the business registry's XML (spec §2) into plain dicts, safely.

Owns: the parsers (libxml2 through lxml for the ordinary page without a DOCTYPE; expat as the reference,
through defusedxml for anything with a DOCTYPE: no DTD entities, no external entities, so a billion-laughs
or an XXE document is refused instead of expanded or fetched), the telling apart of a body that was cut
short (transient: fetch again) from one that is broken or unsafe (not transient), and the XML -> dict
mapping.

The mapping keeps the agency's own names and the text exactly as sent (no trimming, no Unicode
normalisation: mojibake and NFD text are landed as they came and repaired in staging):

- `<DoanhNghiep>` -> a dict; a leaf element -> its text (`""` for an empty element, absent element ->
  absent key); a leaf's attributes -> sibling keys `"<Element>@<attr>"` (`VonDieuLe` stays the amount
  text, `VonDieuLe@donVi` keeps the unit, so a contract can still read `VonDieuLe` as a number);
- an element with children -> a dict (`TruSo` -> `{DiaChi, MaXa, MaHuyen, MaTinh}`), its own attributes
  as `"@<attr>"` keys; a repeated name -> a list;
- `NguoiDaiDien` is always a list of dicts (one or more representatives), `NganhNghe` always a list of
  `{ma, chinh, ...}` (the `<Nganh>` attributes as sent, `"true"`/`"false"` kept as text);
- unknown elements are kept by the same rules (schema drift stays visible in raw, nothing is lost).
"""

from __future__ import annotations

import codecs
import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from xml.etree.ElementTree import Element, ParseError, TreeBuilder, XMLParser

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from lxml import etree

ROOT = "DanhSachDoanhNghiep"
RECORD = "DoanhNghiep"
# Elements the spec says repeat: always lists, even with one member, so the shape does not depend on counts.
LIST_FIELDS = frozenset({"NguoiDaiDien"})
# Containers whose members are the list (NganhNghe holds <Nganh> items).
LIST_CONTAINERS = frozenset({"NganhNghe"})


# What `parse_xml` returns: an lxml element or, on the strict path, an ElementTree one. The mapping below
# uses only what both offer (tag, text, attrib, len, iteration, get, itertext).
Node: TypeAlias = Element | etree._Element


class XmlPageError(ValueError):
    """The body is not a usable enterprise list."""


class TruncatedXmlError(XmlPageError):
    """The document ended before its root element closed: the body was cut short in transit."""


class UnsafeXmlError(XmlPageError):
    """The document declares entities (entity expansion / external entities): refused, never expanded."""


@dataclass
class EnterprisePage:
    """One `<DanhSachDoanhNghiep>`: the announced total (`tongSo`), offset, limit and the records."""

    total: int | None
    offset: int | None
    limit: int | None
    records: list[dict[str, Any]] = field(default_factory=list)


# Encodings in which "<!DOCTYPE" can only be written as those ASCII bytes.
_ASCII_COMPATIBLE = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"})
_DECLARED_ENCODING = re.compile(rb"""\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def declares_nothing(data: bytes) -> bool:
    """True when the document provably has no DOCTYPE: it is in an ASCII-compatible encoding (no UTF-16/32
    byte order mark or NUL bytes, no other declared encoding) and the bytes `<!DOCTYPE` occur nowhere.
    Entities can only be declared inside a DOCTYPE (expat accepts the keyword in upper case only), so such a
    document cannot define an entity to expand or fetch, and the C parser may read it."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    head = data[start : start + 256]
    if b"\x00" in head[:4] or head.startswith((codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE)):
        return False
    declared = _DECLARED_ENCODING.match(head)
    if declared and declared.group(1).decode("ascii").lower() not in _ASCII_COMPATIBLE:
        return False
    return data.find(b"<!DOCTYPE", start) < 0


def parse_xml(body: bytes | str) -> Node:
    """Parse a whole document with entity declarations forbidden. A document that ends early raises
    TruncatedXmlError; one that is broken in the middle raises XmlPageError; entities raise UnsafeXmlError.
    Returns the root element (lxml's or ElementTree's: both are read by the same code, see `_fields`).

    A document without a DOCTYPE (every page a registry following the spec sends) is read by libxml2
    (lxml): the tree is built in C with the GIL released (the landing of the previous page runs meanwhile)
    and freed in C, with no Python object per element until the mapping reads it; a connector run's CPU per
    500-record page went from 52.6 to 46.6 ms (medians of six runs each). A DOCTYPE-free document cannot
    declare an entity to expand or fetch. It is accepted only when libxml2 reported nothing at all (not
    even a recoverable namespace error). Anything else, a failure included, goes through `parse_xml_strict`,
    which decides what the document is and how it failed, so the errors do not depend on the fast path."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    if declares_nothing(data):
        parser = _fast_parser()
        try:
            root = etree.fromstring(data, parser)
        except etree.XMLSyntaxError:
            root = None
        if root is not None and not parser.error_log:
            return root
    return parse_xml_strict(data)


def _fast_parser() -> etree.XMLParser:
    # A parser per document: lxml parsers keep per-parse state (the error log) and must not be shared
    # between threads. No network, no entity substitution, comments and processing instructions dropped,
    # libxml2's default limits on depth and text size kept (huge_tree off).
    return etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True, remove_pis=True,
                           load_dtd=False, huge_tree=False)


def parse_xml_strict(data: bytes) -> Element:
    """The reference parse, with expat: the standard library's C parser for a document without a DOCTYPE,
    defusedxml (which refuses entity declarations) for anything else. Both are expat with a TreeBuilder, so
    they build the same tree and fail in the same places: an error while feeding means the bytes are wrong
    (XmlPageError), one only at the end of input means the document was cut short (TruncatedXmlError)."""
    if declares_nothing(data):
        parser: XMLParser = XMLParser(target=TreeBuilder())
    else:
        parser = DefusedXMLParser(target=TreeBuilder(), forbid_dtd=False, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
    except DefusedXmlException as exc:
        raise UnsafeXmlError(f"refused an XML document that declares entities: {exc}") from exc
    except ParseError as exc:
        # expat reports an error while feeding only where the bytes themselves are wrong
        raise XmlPageError(f"XML is not well-formed: {exc}") from exc
    try:
        return parser.close()
    except DefusedXmlException as exc:
        raise UnsafeXmlError(f"refused an XML document that declares entities: {exc}") from exc
    except ParseError as exc:
        # Everything fed was fine so far and only the end of input is wrong: the document was cut short
        # ("no element found", "unclosed token", a partial UTF-8 character).
        raise TruncatedXmlError(f"XML document ends before it is complete: {exc}") from exc


def parse_enterprise_page(body: bytes | str) -> EnterprisePage:
    """A `<DanhSachDoanhNghiep>` body -> EnterprisePage with one dict per `<DoanhNghiep>`."""
    with gc_paused():
        root = parse_xml(body)
        if local_name(root.tag) != ROOT:
            raise XmlPageError(f"expected <{ROOT}>, got <{local_name(root.tag)}>: {_snippet(root)}")
        try:
            records = [enterprise_to_dict(child) for child in root if local_name(child.tag) == RECORD]
        except RecursionError:
            # a record the spec describes is four levels deep; one nested past Python's recursion limit is
            # not an enterprise record, and is reported as such rather than as an internal error
            raise XmlPageError("an enterprise record nests elements too deeply to be read") from None
        page = EnterprisePage(
            total=_int_attr(root, "tongSo"), offset=_int_attr(root, "offset"), limit=_int_attr(root, "limit"),
            records=records,
        )
        del root  # freed by reference counting before collection resumes (see gc_paused)
    return page


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a page is turned into a tree and dicts.

    A 500-record page allocates some 40,000 containers; every 700 allocations start a collection, and the
    older generations' collections walk the whole heap (all of Airflow's modules in a task process), which
    more than doubled the parse time (6.3 -> 14.6 ms a page measured). A tree and its dicts hold no
    reference cycles, so reference counting frees them anyway. The tree must be gone before collection
    resumes: the first collection after it walks every container allocated meanwhile that is still alive."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def enterprise_to_dict(element: Node) -> dict[str, Any]:
    """One `<DoanhNghiep>` as a dict with the agency's names and text as sent."""
    return _fields(element, list_fields=LIST_FIELDS)


def local_name(tag: Any) -> str:
    """The element name without a namespace (a server may add a default namespace; the names are the spec's)."""
    text = str(tag)
    return text.rsplit("}", 1)[-1] if text.startswith("{") else text


def _fields(element: Node, *, list_fields: frozenset[str] = frozenset(), attr_prefix: str = "@") -> dict[str, Any]:
    # Runs for every element of every page: written for speed (names resolved inline, the common case of a
    # leaf seen once first); the rules are the module docstring's.
    attrib = element.attrib
    out: dict[str, Any] = {f"{attr_prefix}{local_name(k)}": v for k, v in attrib.items()} if attrib else {}
    repeated: set[str] = set()
    for child in element:
        tag = child.tag
        if tag.__class__ is not str:  # comments / processing instructions, if a builder keeps them
            continue
        name = tag.rsplit("}", 1)[-1] if tag[:1] == "{" else tag
        if name in list_fields:
            out.setdefault(name, []).append(_fields(child))
        elif name in LIST_CONTAINERS:
            out.setdefault(name, []).extend([_item(member) for member in child if member.tag.__class__ is str])
        elif len(child):
            _add(out, repeated, name, _fields(child))
        else:
            text = child.text
            if name in out:
                _add(out, repeated, name, "" if text is None else text)
            else:
                out[name] = "" if text is None else text
            child_attrib = child.attrib
            if child_attrib:
                for attr, value in child_attrib.items():
                    _add(out, repeated, f"{name}@{local_name(attr)}", value)
    return out


def _item(element: Node) -> dict[str, Any]:
    """A list member such as `<Nganh ma=".." chinh=".."/>`: its attributes as plain keys, then children."""
    if len(element):
        out = _fields(element, attr_prefix="")
    else:  # the usual member, attributes only (a quarter of a page's elements): no call per attribute
        out = {(k.rpartition("}")[2] if k[0] == "{" else k): v for k, v in element.items()}
    text = element.text
    if text and text.strip():
        out["#text"] = text
    return out


def _add(out: dict[str, Any], repeated: set[str], name: str, value: Any) -> None:
    """Set `name`; a name met again becomes a list of its values (an unknown repeated element is kept whole)."""
    if name not in out:
        out[name] = value
    elif name in repeated:
        out[name].append(value)
    else:
        out[name] = [out[name], value]
        repeated.add(name)


def _int_attr(element: Node, name: str) -> int | None:
    raw = element.get(name)
    try:
        return int(raw.strip()) if raw is not None else None
    except ValueError:
        return None


def _snippet(element: Node) -> str:
    text = " ".join(t.strip() for t in element.itertext() if t.strip())
    return text[:200]
