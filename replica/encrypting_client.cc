#include "replica/encrypting_client.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>

#include "replica/file_client.h"

namespace replica {
namespace {

using services::Result;
using services::Status;

constexpr char kMagic[8] = {'G', 'W', 'E', 'N', 'C', 0, 0, 1};
constexpr size_t kKeyIdBytes = 4;
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;
constexpr size_t kPrefixBytes = sizeof kMagic + kKeyIdBytes + kNonceBytes;

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

std::string Hex(std::string_view bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

Result<std::string> DecodeKey(const std::string& text) {
  std::string key;
  if (text.size() == 64 && text.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos) {
    for (size_t i = 0; i < 64; i += 2) {
      key += static_cast<char>(std::stoi(text.substr(i, 2), nullptr, 16));
    }
    return key;
  }
  unsigned char buf[64];
  const int n = EVP_DecodeBlock(buf, reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  // EVP_DecodeBlock counts padding bytes as zeros: 44 characters of base64 with one '=' is 32.
  const int padding = text.size() >= 2 && text.back() == '=' ? (text[text.size() - 2] == '=' ? 2 : 1) : 0;
  if (n - padding == 32 && text.size() == 44) return std::string(reinterpret_cast<char*>(buf), 32);
  return Status::InvalidArgument(
      "[replica] encryption_key must be 32 bytes as 64 hex digits or base64 (44 characters); "
      "make one with: openssl rand -hex 32");
}

CipherCtx NewCtx() { return CipherCtx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free); }

}  // namespace

Result<std::unique_ptr<EncryptingClient>> EncryptingClient::Wrap(std::shared_ptr<ReplicaClient> inner,
                                                                const std::string& key_text) {
  Result<std::string> key = DecodeKey(key_text);
  if (!key.ok()) return key.status();
  return std::unique_ptr<EncryptingClient>(new EncryptingClient(std::move(inner), std::move(*key)));
}

EncryptingClient::EncryptingClient(std::shared_ptr<ReplicaClient> inner, std::string key)
    : inner_(std::move(inner)), key_(std::move(key)) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(key_.data(), key_.size(), digest, &n, EVP_sha256(), nullptr);
  key_id_.assign(reinterpret_cast<char*>(digest), kKeyIdBytes);
  key_id_hex_ = Hex(key_id_);
}

std::string EncryptingClient::Describe() const {
  return inner_->Describe() + " (AES-256-GCM, key id " + key_id_hex_ + ")";
}

Result<std::string> EncryptingClient::Seal(const std::string& name, std::string_view plain) const {
  std::string out(kMagic, sizeof kMagic);
  out += key_id_;
  unsigned char nonce[kNonceBytes];
  if (RAND_bytes(nonce, sizeof nonce) != 1) return Status::Internal("no random bytes for a nonce");
  out.append(reinterpret_cast<char*>(nonce), sizeof nonce);
  CipherCtx ctx = NewCtx();
  int len = 0;
  const size_t start = out.size();
  out.resize(start + plain.size() + kTagBytes);
  auto* o = reinterpret_cast<unsigned char*>(out.data() + start);
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr,
                         reinterpret_cast<const unsigned char*>(key_.data()), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(name.data()),
                        static_cast<int>(name.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), o, &len, reinterpret_cast<const unsigned char*>(plain.data()),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), o + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, o + plain.size()) != 1) {
    return Status::Internal("AES-256-GCM encryption failed");
  }
  return out;
}

Result<std::string> EncryptingClient::Open(const std::string& name, std::string_view sealed) const {
  if (sealed.size() < kPrefixBytes + kTagBytes || std::memcmp(sealed.data(), kMagic, sizeof kMagic) != 0) {
    return Status::Corruption("replica object " + name +
                              " is not encrypted, but [replica] encryption_key is set; restore it "
                              "with a config without encryption_key");
  }
  const std::string_view id = sealed.substr(sizeof kMagic, kKeyIdBytes);
  if (id != key_id_) {
    return Status::Corruption("replica object " + name + " was encrypted with key id " + Hex(id) +
                              ", not this key (id " + key_id_hex_ +
                              "); set [replica] encryption_key to the key it was written with");
  }
  const auto* nonce = reinterpret_cast<const unsigned char*>(sealed.data() + sizeof kMagic + kKeyIdBytes);
  const std::string_view body = sealed.substr(kPrefixBytes, sealed.size() - kPrefixBytes - kTagBytes);
  std::string tag(sealed.substr(sealed.size() - kTagBytes));
  std::string out(body.size(), '\0');
  CipherCtx ctx = NewCtx();
  int len = 0;
  const bool ok =
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) == 1 &&
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr,
                         reinterpret_cast<const unsigned char*>(key_.data()), nonce) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(name.data()),
                        static_cast<int>(name.size())) == 1 &&
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len,
                        reinterpret_cast<const unsigned char*>(body.data()),
                        static_cast<int>(body.size())) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + len, &len) == 1;
  if (!ok) {
    return Status::Corruption("replica object " + name +
                              " failed authentication: it was altered or damaged after it was "
                              "written (AES-256-GCM tag mismatch)");
  }
  return out;
}

// Files are sealed and opened in 1 MiB steps, so snapshots of any size use bounded memory.
Status EncryptingClient::SealFile(const std::string& name, const std::string& in_path,
                                  const std::string& out_path) const {
  int in = open(in_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Status::IoError("cannot open " + in_path + ": " + std::strerror(errno));
  int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    close(in);
    return Status::IoError("cannot create " + out_path + ": " + std::strerror(errno));
  }
  std::string prefix(kMagic, sizeof kMagic);
  prefix += key_id_;
  unsigned char nonce[kNonceBytes];
  RAND_bytes(nonce, sizeof nonce);
  prefix.append(reinterpret_cast<char*>(nonce), sizeof nonce);
  CipherCtx ctx = NewCtx();
  int len = 0;
  bool ok = write(out, prefix.data(), prefix.size()) == static_cast<ssize_t>(prefix.size()) &&
            EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) == 1 &&
            EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr,
                               reinterpret_cast<const unsigned char*>(key_.data()), nonce) == 1 &&
            EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                              reinterpret_cast<const unsigned char*>(name.data()),
                              static_cast<int>(name.size())) == 1;
  std::string buf(1 << 20, '\0'), enc((1 << 20) + 32, '\0');
  while (ok) {
    ssize_t n = read(in, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    ok = EVP_EncryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(enc.data()), &len,
                           reinterpret_cast<unsigned char*>(buf.data()), static_cast<int>(n)) == 1 &&
         write(out, enc.data(), static_cast<size_t>(len)) == len;
  }
  unsigned char tag[kTagBytes];
  ok = ok && EVP_EncryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(enc.data()), &len) == 1 &&
       write(out, enc.data(), static_cast<size_t>(len)) == len &&
       EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, tag) == 1 &&
       write(out, tag, sizeof tag) == static_cast<ssize_t>(sizeof tag) && fsync(out) == 0;
  close(in);
  close(out);
  return ok ? Status::Ok() : Status::IoError("cannot encrypt " + in_path + " into " + out_path);
}

Status EncryptingClient::OpenFile(const std::string& name, const std::string& in_path,
                                  const std::string& out_path) const {
  int in = open(in_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Status::IoError("cannot open " + in_path + ": " + std::strerror(errno));
  const off_t size = lseek(in, 0, SEEK_END);
  std::string prefix(kPrefixBytes, '\0');
  if (size < static_cast<off_t>(kPrefixBytes + kTagBytes) ||
      pread(in, prefix.data(), prefix.size(), 0) != static_cast<ssize_t>(prefix.size())) {
    prefix.clear();
  }
  // Magic and key id are checked with the messages of the in-memory path.
  if (prefix.empty() || std::memcmp(prefix.data(), kMagic, sizeof kMagic) != 0 ||
      prefix.compare(sizeof kMagic, kKeyIdBytes, key_id_) != 0) {
    close(in);
    return Open(name, prefix.empty() ? std::string_view() : std::string_view(prefix + std::string(kTagBytes, '\0'))).status();
  }
  unsigned char tag[kTagBytes];
  if (pread(in, tag, sizeof tag, size - static_cast<off_t>(kTagBytes)) != static_cast<ssize_t>(sizeof tag)) {
    close(in);
    return Status::IoError("cannot read " + in_path);
  }
  int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    close(in);
    return Status::IoError("cannot create " + out_path + ": " + std::strerror(errno));
  }
  const auto* nonce = reinterpret_cast<const unsigned char*>(prefix.data() + sizeof kMagic + kKeyIdBytes);
  CipherCtx ctx = NewCtx();
  int len = 0;
  bool ok = EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) == 1 &&
            EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr,
                               reinterpret_cast<const unsigned char*>(key_.data()), nonce) == 1 &&
            EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                              reinterpret_cast<const unsigned char*>(name.data()),
                              static_cast<int>(name.size())) == 1;
  off_t pos = kPrefixBytes;
  const off_t end = size - static_cast<off_t>(kTagBytes);
  std::string buf(1 << 20, '\0'), dec((1 << 20) + 32, '\0');
  while (ok && pos < end) {
    const size_t want = static_cast<size_t>(std::min<off_t>(static_cast<off_t>(buf.size()), end - pos));
    ssize_t n = pread(in, buf.data(), want, pos);
    if (n <= 0) {
      ok = false;
      break;
    }
    pos += n;
    ok = EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(dec.data()), &len,
                           reinterpret_cast<unsigned char*>(buf.data()), static_cast<int>(n)) == 1 &&
         write(out, dec.data(), static_cast<size_t>(len)) == len;
  }
  const bool authentic =
      ok && EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(dec.data()), &len) == 1;
  close(in);
  close(out);
  if (!authentic) {
    unlink(out_path.c_str());  // nothing unauthenticated is left behind
    return Status::Corruption("replica object " + name +
                              " failed authentication: it was altered or damaged after it was "
                              "written (AES-256-GCM tag mismatch)");
  }
  return Status::Ok();
}

Status EncryptingClient::PutNew(const std::string& key, std::string_view data) {
  Result<std::string> sealed = Seal(key, data);
  if (!sealed.ok()) return sealed.status();
  return inner_->PutNew(key, *sealed);
}

Status EncryptingClient::Put(const std::string& key, std::string_view data) {
  Result<std::string> sealed = Seal(key, data);
  if (!sealed.ok()) return sealed.status();
  return inner_->Put(key, *sealed);
}

Result<std::string> EncryptingClient::PutIfMatch(const std::string& key, std::string_view data,
                                                 const std::string& etag) {
  Result<std::string> sealed = Seal(key, data);
  if (!sealed.ok()) return sealed.status();
  return inner_->PutIfMatch(key, *sealed, etag);
}

Status EncryptingClient::PutFileNew(const std::string& key, const std::string& path) {
  const std::string sealed = path + ".sealed";
  Status st = SealFile(key, path, sealed);
  if (st.ok()) st = inner_->PutFileNew(key, sealed);
  unlink(sealed.c_str());
  return st;
}

Result<std::string> EncryptingClient::Get(const std::string& key) {
  Result<std::string> sealed = inner_->Get(key);
  if (!sealed.ok()) return sealed.status();
  return Open(key, *sealed);
}

Status EncryptingClient::GetToFile(const std::string& key, const std::string& path) {
  const std::string sealed = path + ".sealed";
  Status st = inner_->GetToFile(key, sealed);
  if (st.ok()) st = OpenFile(key, sealed, path);
  unlink(sealed.c_str());
  return st;
}

}  // namespace replica
