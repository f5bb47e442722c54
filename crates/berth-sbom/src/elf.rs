//! Just enough ELF to find a section by name: the ELF header's section header table
//! and its string table, for 32- and 64-bit files of either byte order (the System V
//! ABI's layout). Returns `None` on anything malformed instead of failing.

/// Whether `bytes` starts like an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

struct Reader<'a> {
    b: &'a [u8],
    big: bool,
}

impl Reader<'_> {
    fn u16(&self, at: usize) -> Option<u64> {
        let s: [u8; 2] = self.b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(u64::from(if self.big {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        }))
    }
    fn u32(&self, at: usize) -> Option<u64> {
        let s: [u8; 4] = self.b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u64::from(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        }))
    }
    fn u64(&self, at: usize) -> Option<u64> {
        let s: [u8; 8] = self.b.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(if self.big {
            u64::from_be_bytes(s)
        } else {
            u64::from_le_bytes(s)
        })
    }
}

fn us(v: u64) -> Option<usize> {
    usize::try_from(v).ok()
}

/// Whether the file has a section header table (`e_shnum` > 0): without one, sections
/// can only be found by searching the contents.
pub fn has_section_headers(bytes: &[u8]) -> bool {
    let wide = bytes.get(4) == Some(&2);
    let r = Reader {
        b: bytes,
        big: bytes.get(5) == Some(&2),
    };
    is_elf(bytes) && r.u16(if wide { 0x3c } else { 0x30 }).is_some_and(|n| n > 0)
}

/// The bytes of the section called `name`, if the file has one with contents.
pub fn section<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if !is_elf(bytes) {
        return None;
    }
    let wide = *bytes.get(4)? == 2;
    let r = Reader {
        b: bytes,
        big: *bytes.get(5)? == 2,
    };
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (r.u64(0x28)?, r.u16(0x3a)?, r.u16(0x3c)?, r.u16(0x3e)?)
    } else {
        (r.u32(0x20)?, r.u16(0x2e)?, r.u16(0x30)?, r.u16(0x32)?)
    };
    // (name offset, type, file offset, size) of section `i`.
    let header = |i: u64| -> Option<(u64, u64, u64, u64)> {
        let at = us(shoff.checked_add(i.checked_mul(shentsize)?)?)?;
        if wide {
            Some((
                r.u32(at)?,
                r.u32(at + 4)?,
                r.u64(at + 0x18)?,
                r.u64(at + 0x20)?,
            ))
        } else {
            Some((
                r.u32(at)?,
                r.u32(at + 4)?,
                r.u32(at + 0x10)?,
                r.u32(at + 0x14)?,
            ))
        }
    };
    let slice = |off: u64, size: u64| bytes.get(us(off)?..us(off.checked_add(size)?)?);
    let (_, _, str_off, str_size) = header(shstrndx)?;
    let names = slice(str_off, str_size)?;
    const SHT_NOBITS: u64 = 8;
    (0..shnum).find_map(|i| {
        let (name_off, kind, off, size) = header(i)?;
        let rest = names.get(us(name_off)?..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        (&rest[..end] == name.as_bytes() && kind != SHT_NOBITS)
            .then(|| slice(off, size))
            .flatten()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A little-endian ELF64 file with these sections (and the section name table),
    /// laid out as the System V ABI describes: header, section contents, then the
    /// section header table.
    pub(crate) fn elf64(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut name_offsets = Vec::new();
        for (n, _) in sections.iter().copied().chain([(".shstrtab", &[][..])]) {
            name_offsets.push(names.len() as u32);
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        let mut placed = Vec::new();
        for (_, data) in sections {
            placed.push((out.len() as u64, data.len() as u64));
            out.extend_from_slice(data);
        }
        placed.push((out.len() as u64, names.len() as u64));
        out.extend_from_slice(&names);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        out.extend_from_slice(&[0u8; 64]); // the null section
        for (i, (off, size)) in placed.iter().enumerate() {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name_offsets[i].to_le_bytes());
            h[4..8].copy_from_slice(&1u32.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&off.to_le_bytes());
            h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&h);
        }
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&((placed.len() + 1) as u16).to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&(placed.len() as u16).to_le_bytes());
        out
    }

    #[test]
    fn finds_sections_by_name() {
        let f = elf64(&[(".text", b"code"), (".dep-v0", b"deps")]);
        assert_eq!(section(&f, ".dep-v0"), Some(&b"deps"[..]));
        assert_eq!(section(&f, ".text"), Some(&b"code"[..]));
        assert_eq!(section(&f, ".go.buildinfo"), None);
        assert_eq!(section(&f[..70], ".text"), None);
        assert_eq!(section(b"#!/bin/sh\n", ".text"), None);
        assert!(has_section_headers(&f));
        assert!(!has_section_headers(
            &[b"\x7fELF\x02\x01".as_slice(), &[0; 64]].concat()
        ));
    }

    #[test]
    fn reads_this_machines_binaries() {
        // A real toolchain's output: every ELF executable has a `.text` section.
        let Ok(ls) = std::fs::read("/bin/ls") else {
            return;
        };
        assert!(section(&ls, ".text").is_some_and(|t| !t.is_empty()));
    }
}
