// Durability without blocking the event loop. A connection at synchronous=NORMAL in WAL mode returns from a commit
// once its frames are written to the -wal file (in the page cache), without an fsync. WalSync then fdatasyncs that
// file on libuv's thread pool, once for all the commits made since the previous sync, and only then resolves their
// waiters: what a waiter was promised is on disk, as with synchronous=FULL, and the caller's thread never waits for
// the disk. Linux syncs a file (its inode), not a descriptor, so opening the -wal afresh for each sync always reaches
// the live file. A failed sync fails closed, for good: after an fdatasync error Linux may have dropped the unwritten
// pages and a second fdatasync would succeed without them, so every later waiter gets the first error too. Checkpoints of such a connection sync the
// WAL before copying it into the database and the database after (SQLite's own order), so a restarted WAL never
// loses a synced frame.
import { open } from 'node:fs/promises'
import { dirname } from 'node:path'

export class WalSync {
  private waiters: { resolve: () => void; reject: (err: Error) => void }[] = []
  private running: Promise<void> | null = null
  /** The -wal's directory entry is synced once (SQLite syncs it at a new journal's first sync under FULL). */
  private dirSynced = false
  private failed: Error | null = null

  constructor(private readonly walFile: string) {}

  /** Resolves once every commit made before this call is on disk. */
  synced(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed)
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject })
      this.running ??= this.loop()
    })
  }

  /** Resolves when nothing is being synced (before closing the database). */
  async idle(): Promise<void> {
    while (this.running) await this.running
  }

  private async loop(): Promise<void> {
    try {
      while (this.waiters.length > 0) {
        // every commit these waiters made is already in the file: one sync covers them all
        const batch = this.waiters
        this.waiters = []
        try {
          if (this.failed) throw this.failed
          await this.sync()
          for (const w of batch) w.resolve()
        } catch (err) {
          this.failed ??= new Error(`${this.walFile}: fdatasync failed (${(err as Error).message}): no write is durable from here on`)
          for (const w of batch) w.reject(this.failed)
        }
      }
    } finally {
      this.running = null
    }
  }

  private async sync(): Promise<void> {
    let fh
    try {
      fh = await open(this.walFile, 'r')
    } catch (err) {
      // no -wal: the last connection closed and checkpointed it into the (synced) database
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    try { await fh.datasync() } finally { await fh.close() }
    if (!this.dirSynced) {
      const dir = await open(dirname(this.walFile), 'r')
      try { await dir.sync() } finally { await dir.close() }
      this.dirSynced = true
    }
  }
}
