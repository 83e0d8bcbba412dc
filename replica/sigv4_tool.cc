// sigv4_tool: prints the SigV4 headers replica/sigv4.cc computes for one request, so a test can
// compare them with another signer's (tests/test_s3_sigv4_botocore.py runs botocore on the same
// inputs).
//
//   sigv4_tool --method PUT --host 127.0.0.1:9000 --path '/bucket/odd key'
//       [--query name=value]... [--header 'Name: value']...
//       [--body-file F | --body TEXT | --payload-hash HEX]
//       --region us-east-1 --date 20130524T000000Z
//       --access-key AKID --secret-key SECRET [--session-token TOKEN]
//
// Output, one per line: "authorization: ...", "x-amz-date: ...", "x-amz-content-sha256: ...",
// then the canonical request after a line "--- canonical request".
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "replica/sigv4.h"

namespace {

int Usage(const std::string& why) {
  std::cerr << "sigv4_tool: " << why << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  replica::SigV4Request request;
  replica::SigV4Credentials credentials;
  std::string region = "us-east-1", date, service = "s3", body;
  bool have_body = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return Usage("missing value after " + flag);
    std::string value = argv[++i];
    if (flag == "--method") {
      request.method = value;
    } else if (flag == "--host") {
      request.host = value;
    } else if (flag == "--path") {
      request.path = value;
    } else if (flag == "--query") {
      size_t eq = value.find('=');
      request.query.emplace_back(value.substr(0, eq),
                                 eq == std::string::npos ? "" : value.substr(eq + 1));
    } else if (flag == "--header") {
      size_t colon = value.find(':');
      if (colon == std::string::npos) return Usage("--header wants 'Name: value'");
      request.headers.emplace_back(value.substr(0, colon), value.substr(colon + 1));
    } else if (flag == "--body") {
      body = value;
      have_body = true;
    } else if (flag == "--body-file") {
      std::ifstream in(value, std::ios::binary);
      if (!in) return Usage("cannot read " + value);
      std::ostringstream all;
      all << in.rdbuf();
      body = all.str();
      have_body = true;
    } else if (flag == "--payload-hash") {
      request.payload_sha256 = value;
    } else if (flag == "--region") {
      region = value;
    } else if (flag == "--service") {
      service = value;
    } else if (flag == "--date") {
      date = value;
    } else if (flag == "--access-key") {
      credentials.access_key_id = value;
    } else if (flag == "--secret-key") {
      credentials.secret_access_key = value;
    } else if (flag == "--session-token") {
      credentials.session_token = value;
    } else {
      return Usage("unknown flag " + flag);
    }
  }
  if (request.method.empty() || request.host.empty() || date.empty()) {
    return Usage("--method, --host and --date are required");
  }
  if (request.payload_sha256.empty()) {
    request.payload_sha256 =
        have_body ? replica::Sha256Hex(body) : std::string(replica::kEmptySha256);
  }
  replica::SigV4Headers h = replica::SignV4(request, credentials, region, service, date);
  std::cout << "authorization: " << h.authorization << "\n"
            << "x-amz-date: " << h.amz_date << "\n"
            << "x-amz-content-sha256: " << h.content_sha256 << "\n"
            << "--- canonical request\n"
            << h.canonical_request << "\n";
  return 0;
}
