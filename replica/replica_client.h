// ReplicaClient: the object store a replica lives in, as the replication code sees it.
//
// Keys are relative to the replica's root (the folder of a file:// URL, or the bucket and prefix
// of an s3:// URL) and use "/" as separator, e.g. "main/generations/0a1b.../snapshots/...".
// Objects are immutable once created, except the few the caller replaces on purpose (the lease).
//
// What is NOT guaranteed: List is not a snapshot (objects created or deleted while it runs may or
// may not appear); Put of an existing key replaces it without any atomicity across keys; an
// object's mtime is the store's clock, not ours.
//
// Threads: every implementation is safe to call from several threads at once; calls block.
// Errors: kNotFound (Get, Head, GetToFile of a missing key), kAlreadyExists (PutNew, PutFileNew of
// an existing key), kFailedPrecondition (PutIfMatch whose etag no longer matches), kIoError (the
// store failed after retries; the message says how), kInvalidArgument (a bad key).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "services/status.h"

namespace replica {

struct ObjectInfo {
  std::string key;       // relative to the replica root
  int64_t size = 0;      // bytes
  int64_t mtime_ms = 0;  // Unix ms, as the store reports it
  std::string etag;      // opaque; changes whenever the object does
};

struct ClientStats {
  int64_t requests = 0;        // requests sent to the store (retries included)
  int64_t bytes_sent = 0;      // request bodies
  int64_t bytes_received = 0;  // response bodies
  int64_t retries = 0;
};

class ReplicaClient {
 public:
  virtual ~ReplicaClient() = default;

  // "file:///var/backups/site" or "s3://bucket/prefix at http://127.0.0.1:9000" (no secrets).
  virtual std::string Describe() const = 0;

  // Creates `key` only if it does not exist yet (S3: If-None-Match: *; file: link(2)).
  virtual services::Status PutNew(const std::string& key, std::string_view data) = 0;
  // Creates or replaces `key`.
  virtual services::Status Put(const std::string& key, std::string_view data) = 0;
  // Replaces `key` only if its etag is still `etag` (S3: If-Match); returns the new etag. With an
  // empty `etag`, creates the key only if it does not exist. For the lease object.
  virtual services::Result<std::string> PutIfMatch(const std::string& key, std::string_view data,
                                                   const std::string& etag) = 0;
  // Streams a local file into `key`, only if `key` does not exist yet; large files go up in parts
  // (S3 multipart upload) so memory stays bounded.
  virtual services::Status PutFileNew(const std::string& key, const std::string& path) = 0;

  virtual services::Result<std::string> Get(const std::string& key) = 0;
  // The first `n` bytes of `key` (fewer if it is shorter). The default reads the whole object;
  // clients that can read ranges (S3 Range, pread) override it.
  virtual services::Result<std::string> GetPrefix(const std::string& key, size_t n) {
    services::Result<std::string> all = Get(key);
    if (all.ok() && all->size() > n) all->resize(n);
    return all;
  }
  // Streams `key` into a new local file at `path` (written, fsynced; replaced if present).
  virtual services::Status GetToFile(const std::string& key, const std::string& path) = 0;
  virtual services::Result<ObjectInfo> Head(const std::string& key) = 0;
  // Every object whose key starts with `prefix`, in key order.
  virtual services::Result<std::vector<ObjectInfo>> List(const std::string& prefix) = 0;
  // Deletes `key`; a missing key is not an error.
  virtual services::Status Delete(const std::string& key) = 0;
  // Deletes every key of `keys` (missing ones are not errors). The default deletes them one at a
  // time; clients with a batch delete (S3 DeleteObjects: up to 1000 keys a request) override it.
  // Every key is tried even after an error; the first error is returned, and names a key that
  // may be left.
  virtual services::Status DeleteMany(const std::vector<std::string>& keys) {
    services::Status first_error = services::Status::Ok();
    for (const std::string& key : keys) {
      services::Status st = Delete(key);
      if (first_error.ok() && !st.ok()) first_error = std::move(st);
    }
    return first_error;
  }

  virtual ClientStats Stats() const = 0;
};

}  // namespace replica
