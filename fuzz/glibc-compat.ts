/**
 * Jazzer.js's linux-x64 prebuilt fuzzer needs glibc 2.38 and libstdc++ 13 for three symbols only: `__isoc23_strtol`
 * and `__isoc23_strtoul` (C23's strtol, which also reads a 0b prefix; libFuzzer parses its decimal flags with it) and
 * `std::ios_base_library_init` (a link-time anchor). On older systems (Debian 12: glibc 2.36, GCC 12) the addon does
 * not load. This writes a copy of the addon whose strtol imports bind to plain `strtol`/`strtoul` (the same for every
 * flag libFuzzer takes), whose anchor is a weak reference, and whose GLIBC_2.38 and GLIBCXX_3.4.32 requirements are
 * weak, so that `npm run fuzz` runs here without building libFuzzer. The installed package is left as it is.
 */
import { readFileSync, writeFileSync } from 'node:fs';

const C23 = ['__isoc23_strtol', '__isoc23_strtoul'];
/** libstdc++ 13 (GLIBCXX_3.4.32): std::ios_base_library_init(). */
const IOS_INIT = '_ZSt21ios_base_library_initv';

export function needsGlibcCompat(addon: Buffer): boolean {
  return addon.includes(Buffer.from('GLIBC_2.38\0'));
}

export function patchAddon(from: string, to: string): void {
  const b = Buffer.from(readFileSync(from));
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) throw new Error(`${from} is not a 64-bit little-endian ELF file`);
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const sections = Array.from({ length: shnum }, (_, i) => {
    const o = shoff + i * shentsize;
    return { type: b.readUInt32LE(o + 4), offset: Number(b.readBigUInt64LE(o + 0x18)), size: Number(b.readBigUInt64LE(o + 0x20)), link: b.readUInt32LE(o + 0x28) };
  });
  const SHT_DYNSYM = 11, SHT_VERNEED = 0x6ffffffe, SHT_VERSYM = 0x6fffffff;
  const dynsym = sections.find((s) => s.type === SHT_DYNSYM)!;
  const dynstr = sections[dynsym.link]!;
  const versym = sections.find((s) => s.type === SHT_VERSYM)!;
  const verneed = sections.find((s) => s.type === SHT_VERNEED)!;
  const str = (off: number) => b.toString('latin1', dynstr.offset + off, b.indexOf(0, dynstr.offset + off));

  // Version requirements: make GLIBC_2.38 weak (a missing weak version is not fatal) and find GLIBC_2.2.5's index.
  let baseIndex = 0;
  for (let vn = verneed.offset; ; ) {
    const cnt = b.readUInt16LE(vn + 2);
    let aux = vn + b.readUInt32LE(vn + 8);
    for (let k = 0; k < cnt; k++) {
      const name = str(b.readUInt32LE(aux + 8));
      if (name === 'GLIBC_2.38' || name === 'GLIBCXX_3.4.32') b.writeUInt16LE(b.readUInt16LE(aux + 4) | 0x2, aux + 4);
      if (name === 'GLIBC_2.2.5') baseIndex = b.readUInt16LE(aux + 6);
      aux += b.readUInt32LE(aux + 12);
    }
    const next = b.readUInt32LE(vn + 12);
    if (!next) break;
    vn += next;
  }
  if (!baseIndex) throw new Error(`${from}: no GLIBC_2.2.5 version requirement to bind strtol to`);
  // The two imports: their names become the tail of their own strings ("strtol", "strtoul"), their version 2.2.5.
  let patched = 0;
  for (let i = 0; i * 24 < dynsym.size; i++) {
    const o = dynsym.offset + i * 24;
    const name = str(b.readUInt32LE(o));
    if (name === IOS_INIT) {
      // Referenced only so that a GCC 13 link pulls in libstdc++'s iostream initialisation; an older libstdc++ does
      // that by itself. A weak reference that nothing defines is null instead of a load failure.
      b[o + 4] = (1 << 4) | (b[o + 4]! & 0xf);
      patched++;
      continue;
    }
    if (!C23.includes(name)) continue;
    b.writeUInt32LE(b.readUInt32LE(o) + '__isoc23_'.length, o);
    b.writeUInt16LE(baseIndex, versym.offset + i * 2);
    patched++;
  }
  if (patched === 0) throw new Error(`${from}: no __isoc23_ imports found`);
  writeFileSync(to, b);
}
