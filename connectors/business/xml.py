"""Parsing the business registry's XML (spec §2) into plain dicts, safely.

Owns: the hardened parser (defusedxml: no DTD entities, no external entities, so a billion-laughs or an
XXE document is refused instead of expanded or fetched), the telling apart of a body that was cut short
(transient: fetch again) from one that is broken or unsafe (not transient), and the XML -> dict mapping.

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

from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

ROOT = "DanhSachDoanhNghiep"
RECORD = "DoanhNghiep"
# Elements the spec says repeat: always lists, even with one member, so the shape does not depend on counts.
LIST_FIELDS = frozenset({"NguoiDaiDien"})
# Containers whose members are the list (NganhNghe holds <Nganh> items).
LIST_CONTAINERS = frozenset({"NganhNghe"})


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


def parse_xml(body: bytes | str) -> Element:
    """Parse a whole document with entity declarations forbidden. A document that ends early raises
    TruncatedXmlError; one that is broken in the middle raises XmlPageError; entities raise UnsafeXmlError."""
    data = body.encode("utf-8") if isinstance(body, str) else body
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
    root = parse_xml(body)
    if local_name(root.tag) != ROOT:
        raise XmlPageError(f"expected <{ROOT}>, got <{local_name(root.tag)}>: {_snippet(root)}")
    records = [enterprise_to_dict(child) for child in root if local_name(child.tag) == RECORD]
    return EnterprisePage(
        total=_int_attr(root, "tongSo"), offset=_int_attr(root, "offset"), limit=_int_attr(root, "limit"), records=records
    )


def enterprise_to_dict(element: Element) -> dict[str, Any]:
    """One `<DoanhNghiep>` as a dict with the agency's names and text as sent."""
    return _fields(element, list_fields=LIST_FIELDS)


def local_name(tag: Any) -> str:
    """The element name without a namespace (a server may add a default namespace; the names are the spec's)."""
    text = str(tag)
    return text.rsplit("}", 1)[-1] if text.startswith("{") else text


def _fields(element: Element, *, list_fields: frozenset[str] = frozenset(), attr_prefix: str = "@") -> dict[str, Any]:
    out: dict[str, Any] = {f"{attr_prefix}{local_name(k)}": v for k, v in element.attrib.items()}
    repeated: set[str] = set()
    for child in element:
        if not isinstance(child.tag, str):  # comments / processing instructions, if a builder keeps them
            continue
        name = local_name(child.tag)
        if name in list_fields:
            out.setdefault(name, []).append(_fields(child))
        elif name in LIST_CONTAINERS:
            out.setdefault(name, []).extend(_item(member) for member in child if isinstance(member.tag, str))
        elif len(child):
            _add(out, repeated, name, _fields(child))
        else:
            _add(out, repeated, name, child.text or "")
            for attr, value in child.attrib.items():
                _add(out, repeated, f"{name}@{local_name(attr)}", value)
    return out


def _item(element: Element) -> dict[str, Any]:
    """A list member such as `<Nganh ma=".." chinh=".."/>`: its attributes as plain keys, then children."""
    out = _fields(element, attr_prefix="")
    if element.text and element.text.strip():
        out["#text"] = element.text
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


def _int_attr(element: Element, name: str) -> int | None:
    raw = element.get(name)
    try:
        return int(raw.strip()) if raw is not None else None
    except ValueError:
        return None


def _snippet(element: Element) -> str:
    text = " ".join(t.strip() for t in element.itertext() if t.strip())
    return text[:200]
