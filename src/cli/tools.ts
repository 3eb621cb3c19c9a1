/** `verify` and `snapshot` subcommands (filled in by the operations work). */
export async function runVerify(_args: string[]): Promise<number> {
  process.stderr.write("verify: not available yet\n");
  return 2;
}

export async function runSnapshot(_args: string[]): Promise<number> {
  process.stderr.write("snapshot: not available yet\n");
  return 2;
}
