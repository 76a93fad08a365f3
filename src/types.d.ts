/** The native binding behind @mongodb-js/zstd (its JS wrapper drops the level argument). */
declare module '@mongodb-js/zstd/bindings.js' {
  export function compress(data: Buffer, level?: number): Promise<Buffer>;
  export function decompress(data: Buffer): Promise<Buffer>;
}
