// s3_tool: runs one ReplicaClient call on an S3Client, for the black-box tests
// (tests/test_s3_replica_client.py) and for poking at a store by hand.
//
//   s3_tool --url s3://bucket/prefix [--endpoint URL] [--region R]
//           [--access-key K --secret-key S [--session-token T]]   (else the AWS_* variables)
//           [--path-style | --virtual-hosted] [--conditional auto|native|emulated]
//           [--multipart-threshold BYTES] [--part-size BYTES] [--page-size N] [--delete-batch N]
//           [--max-attempts N] [--retry-base-ms MS] [--connect-timeout-ms MS]
//           [--low-speed-seconds S] [--request-timeout-ms MS] [--stats]
//           COMMAND ARGS...
//
// Commands: put-new KEY DATA | put KEY DATA | put-if-match KEY ETAG DATA | put-file-new KEY PATH |
// get KEY (raw bytes to stdout) | get-to-file KEY PATH | head KEY | list PREFIX | delete KEY |
// delete-many KEY,KEY,... [KEY,KEY,...]... (one DeleteMany call per argument, in order) |
// describe | probe | put-many PREFIX COUNT THREADS (COUNT small objects PREFIX0..., written from
// THREADS threads through one client, then read back). DATA "@FILE" reads FILE. head and list print
// JSON; put-if-match prints the new ETag.
//
// Exit status: 0 on success, 10 + the services::Status code otherwise (11 invalid argument,
// 12 not found, 13 already exists, 14 failed precondition, 16 IO error), 2 for bad usage; the
// error goes to stderr. --stats prints the client's counters to stderr as a JSON line.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "replica/s3_client.h"

namespace {

using replica::ObjectInfo;
using services::Status;

int Usage(const std::string& why) {
  std::cerr << "s3_tool: " << why << " (see the comment at the top of replica/s3_tool.cc)\n";
  return 2;
}

int Finish(const Status& s) {
  if (s.ok()) return 0;
  std::cerr << s.ToString() << "\n";
  return 10 + static_cast<int>(s.code());
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out + "\"";
}

std::string Json(const ObjectInfo& o) {
  return "{\"key\": " + JsonString(o.key) + ", \"size\": " + std::to_string(o.size) +
         ", \"mtime_ms\": " + std::to_string(o.mtime_ms) + ", \"etag\": " + JsonString(o.etag) +
         "}";
}

bool ReadData(const std::string& arg, std::string* out) {
  if (!arg.starts_with("@")) {
    *out = arg;
    return true;
  }
  std::ifstream in(arg.substr(1), std::ios::binary);
  if (!in) return false;
  std::ostringstream all;
  all << in.rdbuf();
  *out = all.str();
  return true;
}

// Parses the options into *o; returns the index of the command, or -1 after printing why not.
int ParseOptions(int argc, char** argv, replica::S3Options* o, bool* stats) {
  int i = 1;
  for (; i < argc && std::string(argv[i]).starts_with("--"); ++i) {
    std::string flag = argv[i];
    if (flag == "--path-style") {
      o->force_path_style = true;
      continue;
    }
    if (flag == "--virtual-hosted") {
      o->force_path_style = false;
      continue;
    }
    if (flag == "--stats") {
      *stats = true;
      continue;
    }
    if (i + 1 >= argc) return Usage("missing value after " + flag), -1;
    std::string v = argv[++i];
    if (flag == "--url")
      o->url = v;
    else if (flag == "--endpoint")
      o->endpoint = v;
    else if (flag == "--region")
      o->region = v;
    else if (flag == "--access-key")
      o->access_key_id = v;
    else if (flag == "--secret-key")
      o->secret_access_key = v;
    else if (flag == "--session-token")
      o->session_token = v;
    else if (flag == "--multipart-threshold")
      o->multipart_threshold = std::atoll(v.c_str());
    else if (flag == "--part-size")
      o->part_size = std::atoll(v.c_str());
    else if (flag == "--page-size")
      o->list_page_size = std::atoi(v.c_str());
    else if (flag == "--delete-batch")
      o->delete_batch_size = std::atoi(v.c_str());
    else if (flag == "--max-attempts")
      o->max_attempts = std::atoi(v.c_str());
    else if (flag == "--retry-base-ms")
      o->retry_base_ms = std::atoll(v.c_str());
    else if (flag == "--connect-timeout-ms")
      o->timeouts.connect_ms = std::atoll(v.c_str());
    else if (flag == "--low-speed-seconds")
      o->timeouts.low_speed_seconds = std::atoll(v.c_str());
    else if (flag == "--request-timeout-ms")
      o->timeouts.request_ms = std::atoll(v.c_str());
    else if (flag == "--conditional") {
      if (v == "auto")
        o->conditional_writes = replica::ConditionalWrites::kAuto;
      else if (v == "native")
        o->conditional_writes = replica::ConditionalWrites::kNative;
      else if (v == "emulated")
        o->conditional_writes = replica::ConditionalWrites::kEmulated;
      else
        return Usage("--conditional is auto, native or emulated"), -1;
    } else {
      return Usage("unknown flag " + flag), -1;
    }
  }
  return i;
}

// One client shared by several threads, as the replicator uses it.
int PutMany(replica::S3Client& client, const std::string& prefix, int count, int threads) {
  std::vector<Status> results(static_cast<size_t>(count));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = t; i < count; i += threads) {
        std::string key = prefix + std::to_string(i);
        Status s = client.Put(key, key);
        if (s.ok()) {
          auto got = client.Get(key);
          if (!got.ok())
            s = got.status();
          else if (*got != key)
            s = Status::Corruption("read back something else for " + key);
        }
        results[static_cast<size_t>(i)] = s;
      }
    });
  }
  for (auto& w : workers) w.join();
  for (const Status& s : results) {
    if (!s.ok()) return Finish(s);
  }
  return 0;
}

int Run(replica::S3Client& client, const std::vector<std::string>& a) {
  const std::string& cmd = a[0];
  auto need = [&](size_t n) { return a.size() == n + 1; };
  std::string data;
  if (cmd == "describe" && need(0)) {
    std::cout << client.Describe() << "\n";
    return 0;
  }
  if (cmd == "probe" && need(0)) {
    auto r = client.ConditionalWritesSupported();
    if (!r.ok()) return Finish(r.status());
    std::cout << (*r ? "native" : "emulated") << "\n" << client.Describe() << "\n";
    return 0;
  }
  if ((cmd == "put-new" || cmd == "put") && need(2)) {
    if (!ReadData(a[2], &data)) return Usage("cannot read " + a[2]);
    return Finish(cmd == "put" ? client.Put(a[1], data) : client.PutNew(a[1], data));
  }
  if (cmd == "put-if-match" && need(3)) {
    if (!ReadData(a[3], &data)) return Usage("cannot read " + a[3]);
    auto r = client.PutIfMatch(a[1], data, a[2]);
    if (!r.ok()) return Finish(r.status());
    std::cout << *r << "\n";
    return 0;
  }
  if (cmd == "put-file-new" && need(2)) return Finish(client.PutFileNew(a[1], a[2]));
  if (cmd == "get" && need(1)) {
    auto r = client.Get(a[1]);
    if (!r.ok()) return Finish(r.status());
    std::cout.write(r->data(), static_cast<std::streamsize>(r->size()));
    return 0;
  }
  if (cmd == "get-to-file" && need(2)) return Finish(client.GetToFile(a[1], a[2]));
  if (cmd == "head" && need(1)) {
    auto r = client.Head(a[1]);
    if (!r.ok()) return Finish(r.status());
    std::cout << Json(*r) << "\n";
    return 0;
  }
  if (cmd == "list" && need(1)) {
    auto r = client.List(a[1]);
    if (!r.ok()) return Finish(r.status());
    std::cout << "[";
    for (size_t i = 0; i < r->size(); ++i) std::cout << (i ? ",\n " : "") << Json((*r)[i]);
    std::cout << "]\n";
    return 0;
  }
  if (cmd == "delete" && need(1)) return Finish(client.Delete(a[1]));
  if (cmd == "delete-many" && a.size() > 1) {
    for (size_t i = 1; i < a.size(); ++i) {
      std::vector<std::string> keys;
      std::stringstream in(a[i]);
      for (std::string key; std::getline(in, key, ',');) keys.push_back(key);
      const Status s = client.DeleteMany(keys);
      if (!s.ok()) return Finish(s);
    }
    return 0;
  }
  if (cmd == "put-many" && need(3))
    return PutMany(client, a[1], std::atoi(a[2].c_str()), std::atoi(a[3].c_str()));
  return Usage("unknown command or wrong number of arguments: " + cmd);
}

}  // namespace

int main(int argc, char** argv) {
  replica::S3Options options;
  bool stats = false;
  options.log = [](std::string_view line) { std::cerr << "s3: " << line << "\n"; };
  int i = ParseOptions(argc, argv, &options, &stats);
  if (i < 0) return 2;
  if (i >= argc) return Usage("no command");
  auto client = replica::S3Client::Create(options);
  if (!client.ok()) return Finish(client.status());
  int rc = Run(**client, std::vector<std::string>(argv + i, argv + argc));
  if (stats) {
    replica::ClientStats s = (*client)->Stats();
    std::cerr << "stats: {\"requests\": " << s.requests << ", \"bytes_sent\": " << s.bytes_sent
              << ", \"bytes_received\": " << s.bytes_received << ", \"retries\": " << s.retries
              << "}\n";
  }
  return rc;
}
