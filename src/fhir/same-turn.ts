/**
 * Work asked for in the same turn of the event loop, handed over together: everything added before the loop's check
 * phase (after the poll phase that delivered this turn's requests) goes out in groups of at most `max`. The grouped
 * reads and creates of the repository use it (read-batch.ts, create-batch.ts).
 */
export class SameTurnGroups<W> {
  private waiting: W[] = [];
  private scheduled = false;

  /** `send` answers every item of its group itself and never rejects. */
  constructor(
    private readonly max: number,
    private readonly send: (group: W[]) => Promise<void>,
  ) {}

  add(item: W): void {
    this.waiting.push(item);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const all = this.waiting;
      this.waiting = [];
      for (let i = 0; i < all.length; i += this.max) void this.send(all.slice(i, i + this.max));
    });
  }
}
