// Unit tests of the S3 client's pure parts: URL, endpoint and key rules, ETags, options. Its
// requests are tested against a real S3-compatible server in tests/test_s3_replica_client.py.
#include "replica/s3_client.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include "replica/s3_etag.h"
#include "replica/s3_url.h"

namespace replica {
namespace {

using services::Status;

TEST(S3Url, ParsesBucketAndPrefix) {
  auto u = ParseS3Url("s3://my-bucket/some/prefix/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->bucket, "my-bucket");
  EXPECT_EQ(u->prefix, "some/prefix");
  auto bare = ParseS3Url("s3://my-bucket");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->prefix, "");
  for (const char* bad : {"file:///x", "s3://", "s3://ab", "s3://bad bucket/x", "s3://b_k/a//b",
                          "s3://bkt/a/../b", "s3://bkt/./b"}) {
    EXPECT_EQ(ParseS3Url(bad).status().code(), Status::Code::kInvalidArgument) << bad;
  }
}

TEST(S3Url, ParsesEndpoints) {
  auto e = ParseEndpoint("http://127.0.0.1:9000/");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->scheme, "http");
  EXPECT_EQ(e->host, "127.0.0.1:9000");
  EXPECT_EQ(ParseEndpoint("https://s3.example.com")->scheme, "https");
  for (const char* bad : {"127.0.0.1:9000", "ftp://x", "http://", "http://h/path", "http://u@h"}) {
    EXPECT_FALSE(ParseEndpoint(bad).ok()) << bad;
  }
}

TEST(S3Url, ValidatesKeys) {
  for (const char* good : {"a", "main/generations/0a1b/snap.zst", "odd key +=~ é", "a.b/c..d"}) {
    EXPECT_TRUE(ValidateKey(good, "prefix/").ok()) << good;
  }
  for (const char* bad : {"", "/a", "a/", "a//b", "./a", "a/../b", "a\nb", "a\x7f"}) {
    EXPECT_EQ(ValidateKey(bad, "").code(), Status::Code::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ValidateKey(std::string(1000, 'k'), std::string(30, 'p')).ok());
}

TEST(S3Etag, Md5AndMultipartForms) {
  EXPECT_EQ(QuotedMd5("hello"), "\"5d41402abc4b2a76b9719d911017c592\"");
  // Two parts: MD5 of the two binary MD5s, then "-2".
  std::string etag = MultipartEtag({Md5Raw("a"), Md5Raw("b")});
  EXPECT_EQ(etag.substr(etag.size() - 3), "-2\"");
  EXPECT_TRUE(EtagsEqual("\"abc\"", "abc"));
  EXPECT_TRUE(EtagsEqual("W/\"abc\"", "\"abc\""));
  EXPECT_FALSE(EtagsEqual("\"\"", ""));
  EXPECT_FALSE(EtagsEqual("\"abc\"", "\"abd\""));
  EXPECT_EQ(QuoteEtag("abc"), "\"abc\"");
  EXPECT_EQ(QuoteEtag("\"abc\""), "\"abc\"");
}

S3Options TestOptions() {
  S3Options o;
  o.url = "s3://bucket/prefix";
  o.endpoint = "http://127.0.0.1:9";
  o.access_key_id = "AKID";
  o.secret_access_key = "very-secret";
  return o;
}

TEST(S3Client, CreateDescribesWithoutSecrets) {
  auto c = S3Client::Create(TestOptions());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->Describe(), "s3://bucket/prefix at http://127.0.0.1:9");
  EXPECT_EQ((*c)->Describe().find("very-secret"), std::string::npos);
}

TEST(S3Client, CreateRejectsBadOptions) {
  S3Options o = TestOptions();
  o.part_size = 1 << 20;
  EXPECT_EQ(S3Client::Create(o).status().code(), Status::Code::kInvalidArgument);
  o = TestOptions();
  o.max_attempts = 0;
  EXPECT_EQ(S3Client::Create(o).status().code(), Status::Code::kInvalidArgument);
  o = TestOptions();
  o.list_page_size = 5000;
  EXPECT_EQ(S3Client::Create(o).status().code(), Status::Code::kInvalidArgument);
  o = TestOptions();
  o.endpoint = "127.0.0.1:9000";
  EXPECT_EQ(S3Client::Create(o).status().code(), Status::Code::kInvalidArgument);
}

TEST(S3Client, CredentialsFromEnvironmentWhenNotGiven) {
  S3Options o = TestOptions();
  o.access_key_id.clear();
  o.secret_access_key.clear();
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  auto none = S3Client::Create(o);
  ASSERT_EQ(none.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(none.status().message().find("AWS_ACCESS_KEY_ID"), std::string::npos);
  setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "secret-env", 1);
  EXPECT_TRUE(S3Client::Create(o).ok());
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
}

TEST(S3Client, AwsDefaultsToVirtualHostedInTheRegion) {
  S3Options o = TestOptions();
  o.endpoint.clear();
  o.region = "eu-west-3";
  auto c = S3Client::Create(o);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->Describe(), "s3://bucket/prefix at https://s3.eu-west-3.amazonaws.com");
}

TEST(S3Client, BadKeysAreInvalidArgumentWithoutNetwork) {
  auto c = S3Client::Create(TestOptions());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->Put("a//b", "x").code(), Status::Code::kInvalidArgument);
  EXPECT_EQ((*c)->Get("").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ((*c)->Stats().requests, 0);
}

TEST(S3Client, UnreachableStoreIsIoErrorAfterBoundedRetries) {
  S3Options o = TestOptions();  // port 9 (discard): nothing listens there
  o.max_attempts = 3;
  o.retry_base_ms = 1;
  auto c = S3Client::Create(o);
  ASSERT_TRUE(c.ok());
  Status s = (*c)->Put("k", "v");
  EXPECT_EQ(s.code(), Status::Code::kIoError);
  EXPECT_NE(s.message().find("after 3 tries"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("endpoint"), std::string::npos) << s.message();
  EXPECT_EQ((*c)->Stats().requests, 3);
  EXPECT_EQ((*c)->Stats().retries, 2);
}

}  // namespace
}  // namespace replica
