// EncryptingClient: a ReplicaClient that encrypts every object with AES-256-GCM before handing it
// to the store it wraps, and decrypts (and authenticates) on the way back.
//
// An encrypted object is: "GWENC\0\0\x01" (8) | key id (4, the first bytes of SHA-256 of the key)
// | nonce (12, random per object) | ciphertext | GCM tag (16). The object's key (its name) is the
// additional authenticated data, so objects cannot be swapped between names unnoticed. Reading an
// object written with another key, or without encryption, or altered in any way, fails with
// kCorruption and a message saying which.
// Threads: as the wrapped client; safe from any number of threads.
#pragma once

#include <memory>
#include <string>

#include "replica/replica_client.h"

namespace replica {

class EncryptingClient final : public ReplicaClient {
 public:
  // `key_text` is 64 hex digits or the base64 of 32 bytes. kInvalidArgument otherwise.
  static services::Result<std::unique_ptr<EncryptingClient>> Wrap(std::shared_ptr<ReplicaClient> inner,
                                                                  const std::string& key_text);

  std::string Describe() const override;
  services::Status PutNew(const std::string& key, std::string_view data) override;
  services::Status Put(const std::string& key, std::string_view data) override;
  services::Result<std::string> PutIfMatch(const std::string& key, std::string_view data,
                                           const std::string& etag) override;
  services::Status PutFileNew(const std::string& key, const std::string& path) override;
  services::Result<std::string> Get(const std::string& key) override;
  services::Status GetToFile(const std::string& key, const std::string& path) override;
  services::Result<ObjectInfo> Head(const std::string& key) override { return inner_->Head(key); }
  services::Result<std::vector<ObjectInfo>> List(const std::string& prefix) override {
    return inner_->List(prefix);
  }
  services::Status Delete(const std::string& key) override { return inner_->Delete(key); }
  services::Status DeleteMany(const std::vector<std::string>& keys) override {
    return inner_->DeleteMany(keys);
  }
  ClientStats Stats() const override { return inner_->Stats(); }

  const std::string& key_id() const { return key_id_hex_; }

 private:
  EncryptingClient(std::shared_ptr<ReplicaClient> inner, std::string key);
  services::Result<std::string> Seal(const std::string& name, std::string_view plain) const;
  services::Result<std::string> Open(const std::string& name, std::string_view sealed) const;
  services::Status SealFile(const std::string& name, const std::string& in, const std::string& out) const;
  services::Status OpenFile(const std::string& name, const std::string& in, const std::string& out) const;

  std::shared_ptr<ReplicaClient> inner_;
  std::string key_;         // 32 bytes
  std::string key_id_;      // 4 bytes
  std::string key_id_hex_;  // 8 hex digits, for messages
};

}  // namespace replica
