// A SQLite VFS that writes each transaction's WAL frames with one pwrite instead of two per page.
//
// SQLite appends a committed page to the WAL as two writes, a 24-byte frame header and the page,
// so a cache set that changes 3 pages makes 6 system calls and a 100 KB value (25 overflow pages)
// makes 50. This VFS wraps another (the default unix VFS) and, for WAL files only, gathers
// contiguous writes in a buffer that it writes out:
//   - right after the page of a commit frame (a frame header whose "database size" field is not
//     zero), so the commit's error, if any, is returned by that write and fails the COMMIT before
//     SQLite publishes the frames in the wal-index: nothing is acknowledged that is not in the
//     file;
//   - before any other operation on the WAL (read, sync, truncate, size, lock, file control,
//     close), before a write that does not continue the buffer, and before it would pass 128 KiB
//     (the most the unix VFS writes in one call);
//   - when the connection gives up the WAL write lock, so frames of a transaction that spilled
//     and then rolled back can never land after another connection's commit;
//   - at the wal-index memory barrier, as a last guard (should find nothing to write).
// A frame header written at the offset just read (SQLite rewriting checksums after a
// transaction overwrote its own frames) goes straight to the file.
// Durability is unchanged: a commit's frames reach the OS before the commit is visible, exactly as
// without this VFS, and fsyncs pass through untouched.
//
// Threads: a file object is used by the one connection that opened it (SQLite serializes calls
// on a connection); registration is thread-safe.
#pragma once

#include <cstdint>

#include "services/status.h"

namespace services {

// The name to pass to sqlite3_open_v2 for the batching VFS over the process's default VFS,
// registered on first use (not as the process default). Null, meaning SQLite's default VFS, only
// if registration failed.
const char* WalBatchingVfsName();

// How many times, in this process, the wal-index barrier found WAL bytes still buffered and wrote
// them itself (where a failed write cannot be reported). The rules above make this 0; tests check.
int64_t WalBatchingLateFlushes();

// Registers a batching VFS named `name` over the VFS named `underlying` (null: the default).
// For tests that stack it over a fault-injecting VFS. kInvalidArgument if `underlying` is not
// registered; registering the same name twice replaces nothing and returns Ok.
Status RegisterWalBatchingVfs(const char* name, const char* underlying);

}  // namespace services
