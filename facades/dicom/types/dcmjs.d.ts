// dcmjs ships no type declarations; part10.ts types the few internals it uses.
declare module 'dcmjs' {
  const dcmjs: { data: Record<string, unknown>; log: { setLevel(level: string): void } };
  export default dcmjs;
}
