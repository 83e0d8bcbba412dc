#include "replica/s3_xml.h"

#include <charconv>
#include <ctime>
#include <memory>

namespace replica {
namespace {

// Deeper than any S3 document; a hostile or broken server cannot make us recurse without end.
constexpr int kMaxDepth = 32;

struct Element {
  std::string name;  // local name: a "prefix:" is dropped
  std::string text;  // decoded character data directly inside this element
  std::vector<std::unique_ptr<Element>> children;

  const Element* Child(std::string_view n) const {
    for (const auto& c : children) {
      if (c->name == n) return c.get();
    }
    return nullptr;
  }
  std::string ChildText(std::string_view n) const {
    const Element* c = Child(n);
    return c == nullptr ? std::string() : c->text;
  }
};

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

class Parser {
 public:
  explicit Parser(std::string_view in) : in_(in) {}

  services::Result<std::unique_ptr<Element>> ParseDocument() {
    SkipMisc();
    if (!Peek('<')) return Fail("no root element");
    auto root = ParseElement(0);
    if (!root.ok()) return root.status();
    SkipMisc();
    if (pos_ != in_.size()) return Fail("content after the root element");
    return root;
  }

 private:
  services::Status Fail(std::string_view what) const {
    return services::Status::Corruption("malformed XML from the store at byte " +
                                        std::to_string(pos_) + ": " + std::string(what));
  }
  bool Peek(char c) const { return pos_ < in_.size() && in_[pos_] == c; }
  bool StartsWith(std::string_view s) const { return in_.substr(pos_).starts_with(s); }
  void SkipSpace() {
    while (pos_ < in_.size() &&
           (in_[pos_] == ' ' || in_[pos_] == '\t' || in_[pos_] == '\r' || in_[pos_] == '\n')) {
      ++pos_;
    }
  }
  // Skips to just past `end`; false when it never comes.
  bool SkipPast(std::string_view end) {
    size_t at = in_.find(end, pos_);
    if (at == std::string_view::npos) return false;
    pos_ = at + end.size();
    return true;
  }
  // Whitespace, the XML declaration, processing instructions and comments between elements.
  void SkipMisc() {
    for (;;) {
      SkipSpace();
      if (StartsWith("<?")) {
        if (!SkipPast("?>")) return;
      } else if (StartsWith("<!--")) {
        if (!SkipPast("-->")) return;
      } else {
        return;
      }
    }
  }

  std::string ReadName() {
    size_t start = pos_;
    while (pos_ < in_.size() && in_[pos_] != ' ' && in_[pos_] != '>' && in_[pos_] != '/' &&
           in_[pos_] != '\t' && in_[pos_] != '\r' && in_[pos_] != '\n' && in_[pos_] != '=') {
      ++pos_;
    }
    std::string_view name = in_.substr(start, pos_ - start);
    size_t colon = name.find(':');
    if (colon != std::string_view::npos) name.remove_prefix(colon + 1);
    return std::string(name);
  }

  // Decodes an entity starting at '&'; false when malformed.
  bool DecodeEntity(std::string* out) {
    size_t semi = in_.find(';', pos_);
    if (semi == std::string_view::npos || semi - pos_ > 12) return false;
    std::string_view ent = in_.substr(pos_ + 1, semi - pos_ - 1);
    pos_ = semi + 1;
    if (ent == "amp") return out->push_back('&'), true;
    if (ent == "lt") return out->push_back('<'), true;
    if (ent == "gt") return out->push_back('>'), true;
    if (ent == "quot") return out->push_back('"'), true;
    if (ent == "apos") return out->push_back('\''), true;
    if (ent.size() < 2 || ent[0] != '#') return false;
    int base = 10;
    ent.remove_prefix(1);
    if (ent[0] == 'x' || ent[0] == 'X') {
      base = 16;
      ent.remove_prefix(1);
    }
    uint32_t cp = 0;
    auto [end, ec] = std::from_chars(ent.data(), ent.data() + ent.size(), cp, base);
    if (ec != std::errc() || end != ent.data() + ent.size() || cp > 0x10FFFF) return false;
    AppendUtf8(cp, out);
    return true;
  }

  bool SkipAttributes() {
    for (;;) {
      SkipSpace();
      if (pos_ >= in_.size()) return false;
      if (Peek('>') || StartsWith("/>")) return true;
      ReadName();
      SkipSpace();
      if (!Peek('=')) return false;
      ++pos_;
      SkipSpace();
      if (!Peek('"') && !Peek('\'')) return false;
      char quote = in_[pos_++];
      size_t end = in_.find(quote, pos_);
      if (end == std::string_view::npos) return false;
      pos_ = end + 1;
    }
  }

  services::Result<std::unique_ptr<Element>> ParseElement(int depth) {
    if (depth > kMaxDepth) return Fail("elements nested too deep");
    ++pos_;  // '<'
    auto element = std::make_unique<Element>();
    element->name = ReadName();
    if (element->name.empty()) return Fail("element without a name");
    if (!SkipAttributes()) return Fail("bad attributes in <" + element->name + ">");
    if (StartsWith("/>")) {
      pos_ += 2;
      return element;
    }
    ++pos_;  // '>'
    for (;;) {
      if (pos_ >= in_.size()) return Fail("unclosed <" + element->name + ">");
      if (StartsWith("</")) {
        pos_ += 2;
        std::string closing = ReadName();
        SkipSpace();
        if (closing != element->name || !Peek('>')) return Fail("mismatched </" + closing + ">");
        ++pos_;
        return element;
      }
      if (StartsWith("<![CDATA[")) {
        size_t start = pos_ + 9;
        if (!SkipPast("]]>")) return Fail("unclosed CDATA");
        element->text.append(in_.substr(start, pos_ - 3 - start));
      } else if (StartsWith("<!--") || StartsWith("<?")) {
        if (!SkipPast(StartsWith("<!--") ? "-->" : "?>")) return Fail("unclosed comment");
      } else if (Peek('<')) {
        auto child = ParseElement(depth + 1);
        if (!child.ok()) return child.status();
        element->children.push_back(std::move(child).value());
      } else if (Peek('&')) {
        if (!DecodeEntity(&element->text)) return Fail("bad entity");
      } else {
        element->text.push_back(in_[pos_++]);
      }
    }
  }

  std::string_view in_;
  size_t pos_ = 0;
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decoding as ListObjectsV2 uses it with encoding-type=url: form encoding, where "+" is a space
// (what botocore's unquote_plus undoes).
std::string UrlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 &&
               HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string XmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

int64_t ParseInt(std::string_view s, int64_t fallback) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return (ec == std::errc() && end == s.data() + s.size()) ? v : fallback;
}

}  // namespace

services::Result<S3ListPage> ParseListObjectsV2(std::string_view xml) {
  auto doc = Parser(xml).ParseDocument();
  if (!doc.ok()) return doc.status();
  const Element& root = **doc;
  if (root.name != "ListBucketResult") {
    return services::Status::Corruption("expected <ListBucketResult> from the store, got <" +
                                        root.name + ">");
  }
  bool url_encoded = root.ChildText("EncodingType") == "url";
  S3ListPage page;
  page.truncated = root.ChildText("IsTruncated") == "true";
  page.next_continuation_token = root.ChildText("NextContinuationToken");
  for (const auto& child : root.children) {
    if (child->name != "Contents") continue;
    S3ListEntry entry;
    entry.key = child->ChildText("Key");
    if (url_encoded) entry.key = UrlDecode(entry.key);
    entry.size = ParseInt(child->ChildText("Size"), -1);
    entry.mtime_ms = ParseIso8601Ms(child->ChildText("LastModified"));
    entry.etag = child->ChildText("ETag");
    if (entry.key.empty() || entry.size < 0) {
      return services::Status::Corruption(
          "a <Contents> entry without a key or size from the store");
    }
    page.entries.push_back(std::move(entry));
  }
  if (page.truncated && page.next_continuation_token.empty()) {
    return services::Status::Corruption(
        "the store said the listing is truncated but gave no NextContinuationToken");
  }
  return page;
}

S3ErrorBody ParseErrorBody(std::string_view xml) {
  S3ErrorBody out;
  auto doc = Parser(xml).ParseDocument();
  if (!doc.ok() || (*doc)->name != "Error") return out;
  out.code = (*doc)->ChildText("Code");
  out.message = (*doc)->ChildText("Message");
  out.region = (*doc)->ChildText("Region");
  return out;
}

bool IsErrorDocument(std::string_view xml) {
  auto doc = Parser(xml).ParseDocument();
  return doc.ok() && (*doc)->name == "Error";
}

services::Result<std::string> ParseUploadId(std::string_view xml) {
  auto doc = Parser(xml).ParseDocument();
  if (!doc.ok()) return doc.status();
  std::string id = (*doc)->ChildText("UploadId");
  // AWS's root is <InitiateMultipartUploadResult>; rclone 1.75 sends <InitiateMultipartUpload>.
  // Only the UploadId matters.
  if ((*doc)->name == "Error" || id.empty()) {
    return services::Status::Corruption(
        "the store's InitiateMultipartUpload answer has no UploadId");
  }
  return id;
}

std::string CompleteMultipartXml(const std::vector<std::pair<int, std::string>>& parts) {
  std::string out = "<CompleteMultipartUpload>";
  for (const auto& [number, etag] : parts) {
    out += "<Part><PartNumber>" + std::to_string(number) + "</PartNumber><ETag>" + XmlEscape(etag) +
           "</ETag></Part>";
  }
  out += "</CompleteMultipartUpload>";
  return out;
}

std::string DeleteObjectsXml(const std::vector<std::string>& full_keys) {
  std::string out =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
      "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>";
  for (const std::string& key : full_keys)
    out += "<Object><Key>" + XmlEscape(key) + "</Key></Object>";
  out += "</Delete>";
  return out;
}

services::Result<std::vector<S3DeleteError>> ParseDeleteResult(std::string_view xml) {
  auto doc = Parser(xml).ParseDocument();
  if (!doc.ok()) return doc.status();
  if ((*doc)->name != "DeleteResult") {
    return services::Status::Corruption("expected <DeleteResult> from the store, got <" +
                                        (*doc)->name + ">");
  }
  std::vector<S3DeleteError> errors;
  for (const auto& child : (*doc)->children) {
    if (child->name != "Error") continue;
    errors.push_back(
        {child->ChildText("Key"), child->ChildText("Code"), child->ChildText("Message")});
  }
  return errors;
}

int64_t ParseIso8601Ms(std::string_view text) {
  // YYYY-MM-DDTHH:MM:SS[.fff...]Z
  if (text.size() < 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
      text[16] != ':' || text.back() != 'Z') {
    return -1;
  }
  std::tm tm{};
  tm.tm_year = static_cast<int>(ParseInt(text.substr(0, 4), -1)) - 1900;
  tm.tm_mon = static_cast<int>(ParseInt(text.substr(5, 2), -1)) - 1;
  tm.tm_mday = static_cast<int>(ParseInt(text.substr(8, 2), -1));
  tm.tm_hour = static_cast<int>(ParseInt(text.substr(11, 2), -1));
  tm.tm_min = static_cast<int>(ParseInt(text.substr(14, 2), -1));
  tm.tm_sec = static_cast<int>(ParseInt(text.substr(17, 2), -1));
  if (tm.tm_year < 0 || tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_hour < 0 || tm.tm_min < 0 ||
      tm.tm_sec < 0) {
    return -1;
  }
  int64_t ms = 0;
  std::string_view rest = text.substr(19, text.size() - 20);  // between seconds and 'Z'
  if (!rest.empty()) {
    if (rest[0] != '.' || rest.size() < 2) return -1;
    int64_t scale = 100;
    for (char c : rest.substr(1)) {
      if (c < '0' || c > '9') return -1;
      ms += (c - '0') * scale;
      scale /= 10;
    }
  }
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

}  // namespace replica
