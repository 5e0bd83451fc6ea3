/**
 * Whether the process that wrote a claim, lock slot or heartbeat ran on this host and is gone.
 * False when it runs (EPERM: under another user) and when it ran elsewhere: that cannot be known from here.
 */
export function goneFromThisHost(owner: { host: string; pid: number }, host: string): boolean {
  if (owner.host !== host) return false;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'EPERM';
  }
}
