#include "replica/s3_xml.h"

#include <gtest/gtest.h>

namespace replica {
namespace {

TEST(S3Xml, ParsesListObjectsV2Page) {
  auto page = ParseListObjectsV2(R"(<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bkt</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Contents><Key>p/a &amp; b &lt;c&gt; &#233;&#x20AC;</Key>
    <LastModified>2026-11-21T12:24:00.123Z</LastModified>
    <ETag>&quot;5d41402abc4b2a76b9719d911017c592&quot;</ETag><Size>5</Size>
    <StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key><![CDATA[p/raw<>]]></Key><LastModified>1970-01-01T00:00:01Z</LastModified>
    <ETag>abc</ETag><Size>0</Size></Contents>
  <NextContinuationToken>tok+/=</NextContinuationToken>
</ListBucketResult>)");
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_TRUE(page->truncated);
  EXPECT_EQ(page->next_continuation_token, "tok+/=");
  ASSERT_EQ(page->entries.size(), 2u);
  EXPECT_EQ(page->entries[0].key, "p/a & b <c> \xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(page->entries[0].size, 5);
  EXPECT_EQ(page->entries[0].etag, "\"5d41402abc4b2a76b9719d911017c592\"");
  EXPECT_EQ(page->entries[0].mtime_ms, 1795263840123);
  EXPECT_EQ(page->entries[1].key, "p/raw<>");
  EXPECT_EQ(page->entries[1].mtime_ms, 1000);
}

TEST(S3Xml, DecodesUrlEncodedKeysOnlyWhenTheStoreSaysSo) {
  auto encoded = ParseListObjectsV2(
      "<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
      "<Contents><Key>a+b%2Bc%20d</Key><Size>1</Size></Contents></ListBucketResult>");
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(encoded->entries[0].key, "a b+c d");
  auto raw = ParseListObjectsV2(
      "<ListBucketResult><IsTruncated>false</IsTruncated>"
      "<Contents><Key>a+b%2B</Key><Size>1</Size></Contents></ListBucketResult>");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->entries[0].key, "a+b%2B");
}

TEST(S3Xml, RejectsMalformedDocuments) {
  for (const char* bad :
       {"", "<ListBucketResult>", "<ListBucketResult></Other>", "<Error><Code>x</Code></Error>",
        "<ListBucketResult>&bogus;</ListBucketResult>",
        "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
        "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>"}) {
    EXPECT_FALSE(ParseListObjectsV2(bad).ok()) << bad;
  }
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "<a>";
  EXPECT_FALSE(ParseListObjectsV2(deep).ok());
}

TEST(S3Xml, ParsesErrorBodies) {
  S3ErrorBody e = ParseErrorBody(
      "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>"
      "<Message>The request signature we calculated does not match</Message>"
      "<Region>eu-west-1</Region></Error>");
  EXPECT_EQ(e.code, "SignatureDoesNotMatch");
  EXPECT_EQ(e.message, "The request signature we calculated does not match");
  EXPECT_EQ(e.region, "eu-west-1");
  EXPECT_EQ(ParseErrorBody("<html>bad gateway</html>").code, "");
  EXPECT_EQ(ParseErrorBody("").code, "");
  EXPECT_TRUE(IsErrorDocument("<Error><Code>InternalError</Code></Error>"));
  EXPECT_FALSE(IsErrorDocument("<CompleteMultipartUploadResult/>"));
}

TEST(S3Xml, UploadIdAndCompleteBody) {
  auto id = ParseUploadId(
      "<InitiateMultipartUploadResult xmlns=\"x\"><Bucket>b</Bucket><Key>k</Key>"
      "<UploadId>abc-123</UploadId></InitiateMultipartUploadResult>");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "abc-123");
  EXPECT_FALSE(ParseUploadId("<InitiateMultipartUploadResult/>").ok());
  EXPECT_EQ(
      *ParseUploadId("<InitiateMultipartUpload><UploadId>r</UploadId></InitiateMultipartUpload>"),
      "r");  // rclone's root element
  EXPECT_EQ(CompleteMultipartXml({{1, "\"a\""}, {2, "\"b\""}}),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;a&quot;</ETag>"
            "</Part><Part><PartNumber>2</PartNumber><ETag>&quot;b&quot;</ETag></Part>"
            "</CompleteMultipartUpload>");
}

TEST(S3Xml, DeleteObjectsRequestAndResult) {
  EXPECT_EQ(DeleteObjectsXml({"p/a&b", "p/c"}),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
            "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>"
            "<Object><Key>p/a&amp;b</Key></Object><Object><Key>p/c</Key></Object></Delete>");
  auto none = ParseDeleteResult(
      "<?xml version=\"1.0\"?><DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "</DeleteResult>");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->empty());
  auto some = ParseDeleteResult(
      "<DeleteResult><Deleted><Key>p/a</Key></Deleted>"
      "<Error><Key>p/b</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
      "</DeleteResult>");
  ASSERT_TRUE(some.ok());
  ASSERT_EQ(some->size(), 1u);
  EXPECT_EQ((*some)[0].key, "p/b");
  EXPECT_EQ((*some)[0].code, "AccessDenied");
  EXPECT_EQ((*some)[0].message, "Access Denied");
  EXPECT_FALSE(ParseDeleteResult("<Error><Code>NotImplemented</Code></Error>").ok());
  EXPECT_FALSE(ParseDeleteResult("not xml").ok());
}

TEST(S3Xml, Iso8601) {
  EXPECT_EQ(ParseIso8601Ms("2013-05-24T00:00:00Z"), 1369353600000);
  EXPECT_EQ(ParseIso8601Ms("2013-05-24T00:00:00.5Z"), 1369353600500);
  EXPECT_EQ(ParseIso8601Ms("2013-05-24 00:00:00"), -1);
  EXPECT_EQ(ParseIso8601Ms(""), -1);
}

}  // namespace
}  // namespace replica
