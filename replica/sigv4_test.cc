#include "replica/sigv4.h"

#include <gtest/gtest.h>

namespace replica {
namespace {

// The example credentials and time of AWS's S3 SigV4 documentation ("Signature calculations for
// the Authorization header: transferring payload in a single chunk").
const SigV4Credentials kExampleCredentials{"AKIAIOSFODNN7EXAMPLE",
                                           "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
constexpr char kExampleDate[] = "20130524T000000Z";
constexpr char kExampleHost[] = "examplebucket.s3.amazonaws.com";

std::string SignatureOf(const SigV4Headers& h) {
  return h.authorization.substr(h.authorization.rfind('=') + 1);
}

struct AwsExample {
  const char* name;
  SigV4Request request;
  const char* signed_headers;
  const char* signature;
};

class AwsExamples : public testing::TestWithParam<AwsExample> {};

TEST_P(AwsExamples, MatchPublishedSignature) {
  const AwsExample& e = GetParam();
  SigV4Headers h = SignV4(e.request, kExampleCredentials, "us-east-1", "s3", kExampleDate);
  EXPECT_EQ(SignatureOf(h), e.signature) << h.canonical_request;
  EXPECT_NE(h.authorization.find(std::string("SignedHeaders=") + e.signed_headers + ","),
            std::string::npos)
      << h.authorization;
  EXPECT_EQ(h.authorization.rfind("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/"
                                  "us-east-1/s3/aws4_request, ",
                                  0),
            0u);
}

INSTANTIATE_TEST_SUITE_P(
    Sigv4, AwsExamples,
    testing::Values(
        AwsExample{"GetObject",
                   {"GET",
                    kExampleHost,
                    "/test.txt",
                    {},
                    {{"Range", "bytes=0-9"}},
                    std::string(kEmptySha256)},
                   "host;range;x-amz-content-sha256;x-amz-date",
                   "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"},
        AwsExample{"PutObject",
                   {"PUT",
                    kExampleHost,
                    "/test$file.text",
                    {},
                    {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                     {"x-amz-storage-class", "REDUCED_REDUNDANCY"}},
                    Sha256Hex("Welcome to Amazon S3.")},
                   "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                   "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"},
        AwsExample{"GetBucketLifecycle",
                   {"GET", kExampleHost, "/", {{"lifecycle", ""}}, {}, std::string(kEmptySha256)},
                   "host;x-amz-content-sha256;x-amz-date",
                   "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"},
        AwsExample{"ListObjects",
                   {"GET",
                    kExampleHost,
                    "/",
                    {{"prefix", "J"}, {"max-keys", "2"}},  // out of order on purpose
                    {},
                    std::string(kEmptySha256)},
                   "host;x-amz-content-sha256;x-amz-date",
                   "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"}),
    [](const testing::TestParamInfo<AwsExample>& info) { return info.param.name; });

TEST(Sigv4, PutObjectCanonicalRequestMatchesDocumentation) {
  SigV4Request r{
      "PUT",
      kExampleHost,
      "/test$file.text",
      {},
      {{"Date", "Fri, 24 May 2013 00:00:00 GMT"}, {"x-amz-storage-class", "REDUCED_REDUNDANCY"}},
      Sha256Hex("Welcome to Amazon S3.")};
  SigV4Headers h = SignV4(r, kExampleCredentials, "us-east-1", "s3", kExampleDate);
  EXPECT_EQ(
      h.canonical_request,
      "PUT\n/test%24file.text\n\n"
      "date:Fri, 24 May 2013 00:00:00 GMT\n"
      "host:examplebucket.s3.amazonaws.com\n"
      "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
      "x-amz-date:20130524T000000Z\n"
      "x-amz-storage-class:REDUCED_REDUNDANCY\n\n"
      "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
      "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
}

TEST(Sigv4, UriEncodeKeepsUnreservedAndEncodesTheRest) {
  EXPECT_EQ(UriEncode("AZaz09-_.~", false), "AZaz09-_.~");
  EXPECT_EQ(UriEncode("a b+c=d&e/f", false), "a%20b%2Bc%3Dd%26e%2Ff");
  EXPECT_EQ(UriEncode("a b/c", true), "a%20b/c");
  EXPECT_EQ(UriEncode("\xc3\xa9", true), "%C3%A9");  // é, UTF-8, upper-case hex
  EXPECT_EQ(UriEncode("%", true), "%25");
}

TEST(Sigv4, QueryIsSortedByEncodedNameThenValueWithEmptyValues) {
  SigV4Request r{"GET", "h", "/b", {{"b", "2"}, {"a", "z"}, {"a", "y"}, {"c", ""}}, {}, "x"};
  SigV4Headers h = SignV4(r, kExampleCredentials, "us-east-1", "s3", kExampleDate);
  EXPECT_NE(h.canonical_request.find("\na=y&a=z&b=2&c=\n"), std::string::npos)
      << h.canonical_request;
}

TEST(Sigv4, HeaderValuesAreTrimmedAndRepeatsJoined) {
  SigV4Request r{"GET", "h", "/", {}, {{"X-Meta", "  a   b  "}, {"x-meta", "c"}}, "x"};
  SigV4Headers h = SignV4(r, kExampleCredentials, "us-east-1", "s3", kExampleDate);
  EXPECT_NE(h.canonical_request.find("\nx-meta:a b,c\n"), std::string::npos) << h.canonical_request;
}

TEST(Sigv4, SessionTokenIsSigned) {
  SigV4Credentials c = kExampleCredentials;
  c.session_token = "token/with+chars=";
  SigV4Request r{"GET", "h", "/", {}, {}, std::string(kEmptySha256)};
  SigV4Headers h = SignV4(r, c, "eu-west-1", "s3", kExampleDate);
  EXPECT_EQ(h.security_token, "token/with+chars=");
  EXPECT_NE(h.authorization.find("SignedHeaders=host;x-amz-content-sha256;x-amz-date;"
                                 "x-amz-security-token,"),
            std::string::npos);
  EXPECT_NE(h.authorization.find("/20130524/eu-west-1/s3/aws4_request"), std::string::npos);
  EXPECT_EQ(h.authorization.find(c.secret_access_key), std::string::npos);
}

TEST(Sigv4, AmzDateFormatsUtc) {
  EXPECT_EQ(AmzDate(1369353600), "20130524T000000Z");
  EXPECT_EQ(AmzDate(0), "19700101T000000Z");
}

}  // namespace
}  // namespace replica
