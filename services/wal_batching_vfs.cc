#include "services/wal_batching_vfs.h"

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace services {
namespace {

constexpr int kFrameHeaderBytes = 24;  // WAL_FRAME_HDRSIZE in SQLite's wal.c
// The unix VFS writes at most 128 KiB - 1 bytes per call (it masks the count with 0x1ffff and
// reports SQLITE_FULL for the rest), so the buffer never grows past that.
constexpr size_t kMaxWriteBytes = 0x1ffff;
constexpr const char* kDefaultName = "gateway-wal-batching";

struct BatchingVfs {
  sqlite3_vfs base;  // first member: SQLite hands us a sqlite3_vfs*
  sqlite3_vfs* real;
  std::string name;
};

struct BatchingFile {
  sqlite3_file base;  // first member: SQLite hands us a sqlite3_file*
  sqlite3_file* real = nullptr;
  bool is_wal = false;
  BatchingFile* wal = nullptr;  // on a database file: its open WAL, if any
  BatchingFile* db = nullptr;   // on a WAL: its database file
  // WAL bytes not yet written, for file offsets [pending_offset, pending_offset + size).
  std::vector<char> pending;
  sqlite3_int64 pending_offset = 0;
  bool commit_page_next = false;        // the last write was a commit frame's header
  sqlite3_int64 last_read_offset = -1;  // offset of the previous call if it was a read
};

std::atomic<int64_t> late_flushes{0};

// The underlying file lives right after our struct, in the memory SQLite allocated (szOsFile).
constexpr size_t kRealOffset = (sizeof(BatchingFile) + 15) & ~size_t{15};

BatchingFile* Self(sqlite3_file* f) { return reinterpret_cast<BatchingFile*>(f); }
const sqlite3_io_methods* Real(BatchingFile* f) { return f->real->pMethods; }

int Flush(BatchingFile* f) {
  if (f->pending.empty()) return SQLITE_OK;
  int rc = Real(f)->xWrite(f->real, f->pending.data(), static_cast<int>(f->pending.size()),
                           f->pending_offset);
  // Dropped on failure too: the write that asked for the flush returns the error, so SQLite fails
  // the transaction and none of these frames become part of the database.
  f->pending.clear();
  return rc;
}

// Every call on a WAL other than a buffered write first writes out what is buffered, so the file
// is exactly what SQLite believes it wrote whenever SQLite (or anyone) can look at it.
int FlushIfWal(BatchingFile* f) {
  f->last_read_offset = -1;
  return f->is_wal ? Flush(f) : SQLITE_OK;
}

uint32_t BigEndian32(const void* p) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}

int WalWrite(BatchingFile* f, const void* data, int amount, sqlite3_int64 offset) {
  // Taken first: a flush below (the buffer is full) must not make us forget that this write is
  // the commit frame's page, the last of the transaction.
  const bool commit_page = f->commit_page_next;
  f->commit_page_next = false;
  const bool continues =
      !f->pending.empty() &&
      offset == f->pending_offset + static_cast<sqlite3_int64>(f->pending.size());
  if (!f->pending.empty() && !continues) {
    int rc = Flush(f);
    if (rc != SQLITE_OK) return rc;
  }
  const bool rewrite = offset == f->last_read_offset;
  f->last_read_offset = -1;
  if (rewrite) {
    // A checksum rewrite of a frame just read back; it may be the last write before the commit
    // is published, so it cannot wait in the buffer.
    return Real(f)->xWrite(f->real, data, amount, offset);
  }
  if (f->pending.size() + amount > kMaxWriteBytes) {
    int rc = Flush(f);
    if (rc != SQLITE_OK) return rc;
  }
  if (f->pending.empty()) {
    f->pending_offset = offset;
    if (f->pending.capacity() == 0) f->pending.reserve(kMaxWriteBytes);
  }
  const char* bytes = static_cast<const char*>(data);
  f->pending.insert(f->pending.end(), bytes, bytes + amount);
  // Bytes 4..7 of a frame header hold the database size after a commit, zero on other frames.
  f->commit_page_next = amount == kFrameHeaderBytes && BigEndian32(bytes + 4) != 0;
  if (commit_page) return Flush(f);
  return SQLITE_OK;
}

// --- io methods ----------------------------------------------------------------------------------

int FileClose(sqlite3_file* file) {
  BatchingFile* f = Self(file);
  int flush_rc = FlushIfWal(f);
  if (f->db != nullptr) f->db->wal = nullptr;
  if (f->wal != nullptr) f->wal->db = nullptr;
  int rc = Real(f)->xClose(f->real);
  f->~BatchingFile();
  return flush_rc != SQLITE_OK ? flush_rc : rc;
}

int FileRead(sqlite3_file* file, void* out, int amount, sqlite3_int64 offset) {
  BatchingFile* f = Self(file);
  int rc = FlushIfWal(f);
  if (rc != SQLITE_OK) return rc;
  f->last_read_offset = offset;
  return Real(f)->xRead(f->real, out, amount, offset);
}

int FileWrite(sqlite3_file* file, const void* data, int amount, sqlite3_int64 offset) {
  BatchingFile* f = Self(file);
  if (f->is_wal) return WalWrite(f, data, amount, offset);
  return Real(f)->xWrite(f->real, data, amount, offset);
}

// The calls that only need the buffer written out first, then pass through to the real file.
template <typename Method, typename... Args>
int FlushThen(Method sqlite3_io_methods::*method, sqlite3_file* file, Args... args) {
  BatchingFile* f = Self(file);
  int rc = FlushIfWal(f);
  return rc != SQLITE_OK ? rc : (Real(f)->*method)(f->real, args...);
}

int FileTruncate(sqlite3_file* file, sqlite3_int64 size) {
  return FlushThen(&sqlite3_io_methods::xTruncate, file, size);
}
int FileSync(sqlite3_file* file, int flags) {
  return FlushThen(&sqlite3_io_methods::xSync, file, flags);
}
int FileSize(sqlite3_file* file, sqlite3_int64* size) {
  return FlushThen(&sqlite3_io_methods::xFileSize, file, size);
}
int FileLock(sqlite3_file* file, int level) {
  return FlushThen(&sqlite3_io_methods::xLock, file, level);
}
int FileUnlock(sqlite3_file* file, int level) {
  return FlushThen(&sqlite3_io_methods::xUnlock, file, level);
}
int FileCheckReservedLock(sqlite3_file* file, int* out) {
  return FlushThen(&sqlite3_io_methods::xCheckReservedLock, file, out);
}
int FileControl(sqlite3_file* file, int op, void* arg) {
  return FlushThen(&sqlite3_io_methods::xFileControl, file, op, arg);
}

int FileSectorSize(sqlite3_file* file) {
  BatchingFile* f = Self(file);
  return Real(f)->xSectorSize(f->real);
}

int FileDeviceCharacteristics(sqlite3_file* file) {
  BatchingFile* f = Self(file);
  return Real(f)->xDeviceCharacteristics(f->real);
}

int FileShmMap(sqlite3_file* file, int region, int size, int extend, void volatile** out) {
  BatchingFile* f = Self(file);
  return Real(f)->xShmMap(f->real, region, size, extend, out);
}

int FileShmLock(sqlite3_file* file, int offset, int n, int flags) {
  BatchingFile* f = Self(file);
  // Slot 0 is the WAL write lock. Whatever is still buffered when a writer lets it go was never
  // committed (a spill of a transaction that rolled back); written now, it lands before the next
  // writer's frames can, as it would have without this VFS.
  if ((flags & SQLITE_SHM_UNLOCK) != 0 && offset == 0 && f->wal != nullptr) {
    (void)Flush(f->wal);
  }
  return Real(f)->xShmLock(f->real, offset, n, flags);
}

void FileShmBarrier(sqlite3_file* file) {
  BatchingFile* f = Self(file);
  // SQLite calls this between the two copies of the wal-index header it writes to publish a
  // commit. The commit's frames were written with its last page; this only guards that rule.
  if (f->wal != nullptr && !f->wal->pending.empty()) {
    late_flushes.fetch_add(1, std::memory_order_relaxed);
    (void)Flush(f->wal);
  }
  Real(f)->xShmBarrier(f->real);
}

int FileShmUnmap(sqlite3_file* file, int delete_flag) {
  BatchingFile* f = Self(file);
  return Real(f)->xShmUnmap(f->real, delete_flag);
}

int FileFetch(sqlite3_file* file, sqlite3_int64 offset, int amount, void** out) {
  BatchingFile* f = Self(file);
  if (Real(f)->iVersion < 3) {
    *out = nullptr;
    return SQLITE_OK;
  }
  int rc = FlushIfWal(f);
  return rc != SQLITE_OK ? rc : Real(f)->xFetch(f->real, offset, amount, out);
}

int FileUnfetch(sqlite3_file* file, sqlite3_int64 offset, void* page) {
  BatchingFile* f = Self(file);
  if (Real(f)->iVersion < 3) return SQLITE_OK;
  return Real(f)->xUnfetch(f->real, offset, page);
}

const sqlite3_io_methods kMethods = {
    3,
    FileClose,
    FileRead,
    FileWrite,
    FileTruncate,
    FileSync,
    FileSize,
    FileLock,
    FileUnlock,
    FileCheckReservedLock,
    FileControl,
    FileSectorSize,
    FileDeviceCharacteristics,
    FileShmMap,
    FileShmLock,
    FileShmBarrier,
    FileShmUnmap,
    FileFetch,
    FileUnfetch,
};

// --- vfs methods ---------------------------------------------------------------------------------

sqlite3_vfs* RealVfs(sqlite3_vfs* vfs) { return reinterpret_cast<BatchingVfs*>(vfs)->real; }

int VfsOpen(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* file, int flags,
            int* out_flags) {
  BatchingFile* f = new (file) BatchingFile();
  f->base.pMethods = nullptr;
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kRealOffset);
  f->real->pMethods = nullptr;
  sqlite3_vfs* real = RealVfs(vfs);
  int rc = real->xOpen(real, name, f->real, flags, out_flags);
  if (f->real->pMethods == nullptr) {
    // Nothing to close: SQLite will not call xClose on a file whose pMethods is null.
    f->~BatchingFile();
    return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
  }
  // Calls needing a newer io_methods than the real file has are answered above (xFetch) or never
  // made (SQLite checks iVersion before the shm calls; the unix VFS has version 3).
  f->base.pMethods = &kMethods;
  if (rc == SQLITE_OK && (flags & SQLITE_OPEN_WAL) != 0 && name != nullptr) {
    f->is_wal = true;
    sqlite3_file* db_file = sqlite3_database_file_object(name);
    if (db_file != nullptr && db_file->pMethods == &kMethods) {
      f->db = Self(db_file);
      f->db->wal = f;
    }
  }
  return rc;
}

int VfsDelete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  return RealVfs(vfs)->xDelete(RealVfs(vfs), name, sync_dir);
}
int VfsAccess(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  return RealVfs(vfs)->xAccess(RealVfs(vfs), name, flags, out);
}
int VfsFullPathname(sqlite3_vfs* vfs, const char* name, int size, char* out) {
  return RealVfs(vfs)->xFullPathname(RealVfs(vfs), name, size, out);
}
void* VfsDlOpen(sqlite3_vfs* vfs, const char* name) {
  return RealVfs(vfs)->xDlOpen(RealVfs(vfs), name);
}
void VfsDlError(sqlite3_vfs* vfs, int size, char* out) {
  RealVfs(vfs)->xDlError(RealVfs(vfs), size, out);
}
void (*VfsDlSym(sqlite3_vfs* vfs, void* handle, const char* symbol))(void) {
  return RealVfs(vfs)->xDlSym(RealVfs(vfs), handle, symbol);
}
void VfsDlClose(sqlite3_vfs* vfs, void* handle) { RealVfs(vfs)->xDlClose(RealVfs(vfs), handle); }
int VfsRandomness(sqlite3_vfs* vfs, int size, char* out) {
  return RealVfs(vfs)->xRandomness(RealVfs(vfs), size, out);
}
int VfsSleep(sqlite3_vfs* vfs, int micros) { return RealVfs(vfs)->xSleep(RealVfs(vfs), micros); }
int VfsCurrentTime(sqlite3_vfs* vfs, double* out) {
  return RealVfs(vfs)->xCurrentTime(RealVfs(vfs), out);
}
int VfsGetLastError(sqlite3_vfs* vfs, int size, char* out) {
  sqlite3_vfs* real = RealVfs(vfs);
  return real->xGetLastError != nullptr ? real->xGetLastError(real, size, out) : 0;
}
int VfsCurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  sqlite3_vfs* real = RealVfs(vfs);
  if (real->iVersion >= 2 && real->xCurrentTimeInt64 != nullptr) {
    return real->xCurrentTimeInt64(real, out);
  }
  double days = 0;
  int rc = real->xCurrentTime(real, &days);
  *out = static_cast<sqlite3_int64>(days * 86400000.0);
  return rc;
}

std::mutex register_mu;  // makes find-then-register one step

}  // namespace

Status RegisterWalBatchingVfs(const char* name, const char* underlying) {
  std::lock_guard<std::mutex> lock(register_mu);
  if (sqlite3_vfs_find(name) != nullptr) return Status::Ok();
  sqlite3_vfs* real = sqlite3_vfs_find(underlying);
  if (real == nullptr) {
    return Status::InvalidArgument(std::string("no SQLite VFS named ") +
                                   (underlying != nullptr ? underlying : "(default)") +
                                   " to batch WAL writes over; register it first");
  }
  auto* vfs = new BatchingVfs();
  vfs->real = real;
  vfs->name = name;
  sqlite3_vfs& v = vfs->base;
  v.iVersion = 2;
  v.szOsFile = static_cast<int>(kRealOffset) + real->szOsFile;
  v.mxPathname = real->mxPathname;
  v.zName = vfs->name.c_str();
  v.xOpen = VfsOpen;
  v.xDelete = VfsDelete;
  v.xAccess = VfsAccess;
  v.xFullPathname = VfsFullPathname;
  v.xDlOpen = VfsDlOpen;
  v.xDlError = VfsDlError;
  v.xDlSym = VfsDlSym;
  v.xDlClose = VfsDlClose;
  v.xRandomness = VfsRandomness;
  v.xSleep = VfsSleep;
  v.xCurrentTime = VfsCurrentTime;
  v.xGetLastError = VfsGetLastError;
  v.xCurrentTimeInt64 = VfsCurrentTimeInt64;
  int rc = sqlite3_vfs_register(&vfs->base, 0);
  if (rc != SQLITE_OK) {
    delete vfs;
    return Status::Internal(std::string("registering the SQLite VFS ") + name +
                            " failed: " + sqlite3_errstr(rc));
  }
  // Never freed: SQLite keeps the pointer for the life of the process.
  return Status::Ok();
}

int64_t WalBatchingLateFlushes() { return late_flushes.load(std::memory_order_relaxed); }

const char* WalBatchingVfsName() {
  static const bool registered = RegisterWalBatchingVfs(kDefaultName, nullptr).ok();
  // If registration failed (it allocates nothing SQLite can refuse), fall back to the default VFS.
  return registered ? kDefaultName : nullptr;
}

}  // namespace services
