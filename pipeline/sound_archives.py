"""Readers of the sound archives games ship their effects in, so that the demo corpus and its reference
library can take a sound out by its name: OpenTTD's sound archive (.cat), Qt resource collections (.rcc,
GCompris) and OpenClonk's packed groups (.ocg). Each returns the archive's (path or title, file bytes)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def cat_entries(path: str | Path) -> list[tuple[str, bytes]]:
    """The (title, WAV bytes) entries of an OpenTTD sound archive (.cat): a table of (offset, size) pairs,
    the first offset flagged in its top bits, each entry a length-prefixed name ('"Title". By ...') then a
    RIFF file."""
    data = Path(path).read_bytes()
    count = (struct.unpack_from("<I", data)[0] & 0x0FFFFFFF) // 8
    entries = []
    for i in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * i)
        offset &= 0x0FFFFFFF
        body = offset + 1 + data[offset]  # after the name's length byte and the name
        name = data[offset + 1 : body].rstrip(b"\0").decode("latin-1")
        entries.append((name.split('"')[1] if name.count('"') >= 2 else name, data[body : offset + size]))
    return entries


def qt_resource_entries(path: str | Path) -> list[tuple[str, bytes]]:
    """The (path, bytes) files of a Qt resource collection (.rcc, versions 1-3, as GCompris ships its
    activities' data): a header ('qres', version, then the offsets of the tree, the data and the names),
    a tree of nodes (name offset, flags, then a directory's child count and first child or a file's data
    offset), names as length-prefixed UTF-16, each file's data length-prefixed, zlib-compressed behind its
    uncompressed size where flag 1 says so."""
    data = Path(path).read_bytes()
    if data[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource collection (no 'qres' header)")
    version, tree, body, names = struct.unpack_from(">IIII", data, 4)
    node_size = 22 if version >= 2 else 14  # from version 2 on each node ends with its modification time

    def name(offset: int) -> str:
        (length,) = struct.unpack_from(">H", data, names + offset)
        start = names + offset + 6  # after the length and the name's hash
        return data[start : start + 2 * length].decode("utf-16-be")

    entries, todo = [], [(0, "")]
    while todo:
        node, parent = todo.pop(0)
        at = tree + node * node_size
        name_offset, flags = struct.unpack_from(">IH", data, at)
        here = f"{parent}/{name(name_offset)}" if node else ""
        if flags & 2:  # a directory
            count, first = struct.unpack_from(">II", data, at + 6)
            todo += [(first + i, here) for i in range(count)]
            continue
        (offset,) = struct.unpack_from(">I", data, at + 10)
        (size,) = struct.unpack_from(">I", data, body + offset)
        raw = data[body + offset + 4 : body + offset + 4 + size]
        if flags & 4:
            raise ValueError(f"{path}: {here} is zstd-compressed, which this reader does not decode")
        entries.append((here, zlib.decompress(raw[4:]) if flags & 1 else raw))
    return entries


C4GROUP_ID = b"RedWolf Design GrpFolder"
C4GROUP_HEADER, C4GROUP_ENTRY = 204, 316  # bytes: id, versions, entry count, reserved; name[260], then ints


def _c4_unscramble(header: bytes) -> bytes:
    """A C4Group header is stored XORed with 237, then every three bytes' first and last swapped."""
    out = bytearray(b ^ 237 for b in header)
    for i in range(0, len(out) - 2, 3):
        out[i], out[i + 2] = out[i + 2], out[i]
    return bytes(out)


def c4group_entries(path: str | Path) -> list[tuple[str, bytes]]:
    """The (path, bytes) files of an OpenClonk group (.ocg, .ocd: Debian's openclonk-data ships them packed):
    a gzip stream whose magic bytes are 1e 8c (not 1f 8b) holding a group, which is a scrambled header (its
    id, versions and entry count), one 316-byte entry per file (name, then packed, child-group, size and
    offset as little-endian ints), then the files' bytes; a child group is a group in the same layout,
    unscrambled in turn. A folder (an unpacked group) is read file by file."""
    path = Path(path)
    if path.is_dir():
        return sorted((str(f.relative_to(path)), f.read_bytes()) for f in path.rglob("*") if f.is_file())
    raw = path.read_bytes()
    if raw[:2] != b"\x1e\x8c":
        raise ValueError(f"{path}: not a packed OpenClonk group (its first bytes are not 1e 8c)")
    data = zlib.decompress(b"\x1f\x8b" + raw[2:], 16 + zlib.MAX_WBITS)

    def group(at: int, size: int, parent: str) -> list[tuple[str, bytes]]:
        header = _c4_unscramble(data[at : at + C4GROUP_HEADER])
        if not header.startswith(C4GROUP_ID):
            raise ValueError(f"{path}: {parent or 'the top'} is not a C4Group (no '{C4GROUP_ID.decode()}' header)")
        (count,) = struct.unpack_from("<i", header, 36)
        body, out = at + C4GROUP_HEADER + C4GROUP_ENTRY * count, []
        for i in range(count):
            entry = data[at + C4GROUP_HEADER + C4GROUP_ENTRY * i : at + C4GROUP_HEADER + C4GROUP_ENTRY * (i + 1)]
            name = entry[:260].split(b"\0")[0].decode("latin-1")
            _, child, length, _, offset = struct.unpack_from("<5i", entry, 260)
            if body + offset + length > at + size:
                raise ValueError(f"{path}: {parent}{name} runs past the end of its group")
            out += (group(body + offset, length, f"{parent}{name}/") if child
                    else [(parent + name, data[body + offset : body + offset + length])])
        return out

    return group(0, len(data), "")
