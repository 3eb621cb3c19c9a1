/** The client side of RESP, as far as test rigs need to read it: commands are arrays of bulk strings. */

/**
 * One command (a RESP array of bulk strings) from the start of `bytes`, with its length in bytes, or undefined when
 * `bytes` holds only part of one (or something else).
 */
export function parseCommand(bytes: Buffer): { args: string[]; length: number } | undefined {
  const line = (from: number) => {
    const end = bytes.indexOf("\r\n", from);
    return end < 0 ? undefined : { text: bytes.toString("latin1", from, end), next: end + 2 };
  };
  const head = line(0);
  if (!head || !/^\*\d+$/.test(head.text)) return undefined;
  let at = head.next;
  const args: string[] = [];
  for (let i = 0; i < Number(head.text.slice(1)); i++) {
    const len = line(at);
    if (!len || !/^\$\d+$/.test(len.text)) return undefined;
    const size = Number(len.text.slice(1));
    if (bytes.length < len.next + size + 2) return undefined;
    args.push(bytes.toString("utf8", len.next, len.next + size));
    at = len.next + size + 2;
  }
  return { args, length: at };
}
