#include "mesh/domain/error.hpp"
#include "mesh/domain/labels.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace polymesh {
namespace {

using ::testing::HasSubstr;

// The valid and invalid label keys and values below are the published cases of
// Kubernetes' `content.IsLabelKey` / `IsLabelValue` tests.

// This test ensures every key Kubernetes accepts as a qualified name is accepted.
TEST(LabelKey, AcceptsKubernetesQualifiedNames) {
  const std::vector<std::string> keys = {
      "simple",
      "now-with-dashes",
      "1-starts-with-num",
      "1234",
      "simple/simple",
      "now-with-dashes/simple",
      "now-with-dashes/now-with-dashes",
      "now.with.dots/simple",
      "now-with.dashes-and.dots/simple",
      "1-num.2-num/3-num",
      "1234/5678",
      "1.2.3.4/5678",
      "Uppercase_Is_OK_123",
      "example.com/Uppercase_Is_OK_123",
      "requests.storage-foo",
      std::string(63, 'a'),
      std::string(253, 'a') + "/" + std::string(63, 'b'),
  };
  for (const auto& key : keys)
    EXPECT_FALSE(validate_label_key(key, "labels")) << key;
}

// This test ensures every key Kubernetes rejects is rejected as an invalid argument.
TEST(LabelKey, RejectsKubernetesInvalidNames) {
  const std::vector<std::string> keys = {
      "",
      "nospecialchars%^=@",
      "cantendwithadash-",
      "-cantstartwithadash-",
      "only/one/slash",
      "Example.com/abc",
      "example_com/abc",
      "example.com/",
      "/simple",
      std::string(64, 'a'),
      std::string(254, 'a') + "/abc",
      "a b",
      "caf\xc3\xa9",
  };
  for (const auto& key : keys) {
    auto err = validate_label_key(key, "labels");
    ASSERT_TRUE(err) << key;
    EXPECT_EQ(code_of(err), errc::invalid_argument) << key;
  }
}

// This test ensures the error names the caller's field and no position.
TEST(LabelKey, ErrorCarriesField) {
  auto err = validate_label_key("-bad", "agent.labels.-bad");
  ASSERT_TRUE(err);
  EXPECT_EQ(field_of(err), "agent.labels.-bad");
  EXPECT_EQ(position_of(err), -1);
}

// This test ensures each broken key rule is named in the message.
TEST(LabelKey, MessageNamesTheBrokenRule) {
  struct row {
    std::string key;
    std::string message;
  };
  const std::vector<row> rows = {
      {std::string(64, 'a'), "label key name must be 63 characters or fewer"},
      {"", "label key name must not be empty"},
      {"example.com/", "label key name must not be empty"},
      {"/simple", "label key prefix must not be empty"},
      {std::string(254, 'a') + "/abc",
       "label key prefix must be 253 characters or fewer"},
      {"only/one/slash", "a single '/'"},
      {"Example.com/abc", "label key prefix must be a lowercase DNS subdomain"},
      {"cantendwithadash-",
       "must consist of alphanumeric characters, '-', '_' or '.', and must start and "
       "end with an alphanumeric character"},
  };
  for (const auto& r : rows) {
    auto err = validate_label_key(r.key, "labels");
    ASSERT_TRUE(err) << r.key;
    EXPECT_THAT(message_of(err), HasSubstr(r.message)) << r.key;
    EXPECT_NE(message_of(err).back(), '.') << "no trailing period";
  }
}

// This test ensures the key prefix follows k8s' RFC 1123 subdomain rule.
TEST(LabelKey, PrefixMustBeDnsSubdomain) {
  const std::vector<std::string> good = {
      "a",        "ab",           "abc",
      "a1",       "a-1",          "a--1--2--b",
      "0",        "01",           "012",
      "1a",       "1-a",          "1--a--b--2",
      "a.a",      "ab.a",         "abc.a",
      "a1.a",     "a-1.a",        "a--1--2--b.a",
      "a.1",      "ab.1",         "abc.1",
      "a1.1",     "a-1.1",        "a--1--2--b.1",
      "0.a",      "01.a",         "012.a",
      "1a.a",     "1-a.a",        "0.1",
      "01.1",     "012.1",        "1a.1",
      "1-a.1",    "1--a--b--2.1", "a.b.c.d.e",
      "aa.bb.cc", "1.2.3.4.5",    std::string(253, 'a'),
  };
  for (const auto& prefix : good)
    EXPECT_FALSE(validate_label_key(prefix + "/name", "labels")) << prefix;
  const std::vector<std::string> bad = {
      "A",    "ABC",   "aBc",  "A1",  "1-A", "-",
      "a-",   "-a",    "1-",   "-1",  "_",   "a_",
      "_a",   "a_b",   ".",    "a.",  ".a",  "a..b",
      "1.",   ".1",    "1..2", " ",   "a b", "A.a",
      "ab.A", "a.B.c", "a@b",  "a:b", "a%b", std::string(254, 'a'),
  };
  for (const auto& prefix : bad)
    EXPECT_TRUE(validate_label_key(prefix + "/name", "labels")) << prefix;
}

// This test ensures every value k8s accepts, the empty one included, is accepted.
TEST(LabelValue, AcceptsKubernetesValidValues) {
  const std::vector<std::string> values = {
      "simple", "now-with-dashes", "1-starts-with-num",  "end-with-num-1",
      "1234",   "a.b_c-d",         std::string(63, 'a'), "",
  };
  for (const auto& value : values)
    EXPECT_FALSE(validate_label_value(value, "labels.env")) << value;
}

// This test ensures every value Kubernetes rejects is rejected with the field set.
TEST(LabelValue, RejectsKubernetesInvalidValues) {
  const std::vector<std::string> values = {
      "nospecialchars%^=@",
      "Tama-nui-te-r\xc4\x81.is.M\xc4\x81ori.sun",
      "\\backslashes\\are\\bad",
      "-starts-with-dash",
      "ends-with-dash-",
      ".starts.with.dot",
      "ends.with.dot.",
      "has/slash",
      "a b",
      std::string(64, 'a'),
  };
  for (const auto& value : values) {
    auto err = validate_label_value(value, "labels.env");
    ASSERT_TRUE(err) << value;
    EXPECT_EQ(code_of(err), errc::invalid_argument) << value;
    EXPECT_EQ(field_of(err), "labels.env") << value;
  }
}

// This test ensures the value messages name the length and the alphabet rule.
TEST(LabelValue, MessageNamesTheBrokenRule) {
  EXPECT_EQ(message_of(validate_label_value(std::string(64, 'a'), "f")),
            "label value must be 63 characters or fewer");
  EXPECT_THAT(message_of(validate_label_value("-x", "f")),
              HasSubstr("must be empty or consist of alphanumeric characters"));
}

// This test ensures a map of valid labels, and the empty map, pass.
TEST(Labels, ValidMapPasses) {
  EXPECT_FALSE(validate_labels({}));
  EXPECT_FALSE(
      validate_labels({{"env", "prod"}, {"example.com/zone", ""}, {"gpu", "1"}}));
}

// This test ensures a bad key or a bad value is reported under `labels.<key>`.
TEST(Labels, ErrorNamesTheOffendingLabel) {
  auto bad_value = validate_labels({{"env", "prod"}, {"zone", "eu west"}});
  ASSERT_TRUE(bad_value);
  EXPECT_EQ(code_of(bad_value), errc::invalid_argument);
  EXPECT_EQ(field_of(bad_value), "labels.zone");
  EXPECT_THAT(message_of(bad_value), HasSubstr("label value"));

  auto bad_key = validate_labels({{"Bad.Prefix/env", "prod"}});
  ASSERT_TRUE(bad_key);
  EXPECT_EQ(field_of(bad_key), "labels.Bad.Prefix/env");
  EXPECT_THAT(message_of(bad_key), HasSubstr("label key prefix"));
}

// This test ensures an agent carries at most max_labels labels: the count,
// not only the body limit, bounds what every assignment decision matches.
TEST(Labels, AtMostMaxLabels) {
  label_map labels;
  for (size_t i = 0; i < max_labels; ++i)
    labels["k" + std::to_string(i)] = "v";
  EXPECT_FALSE(validate_labels(labels));
  labels["one-more"] = "v";
  auto err = validate_labels(labels);
  ASSERT_TRUE(err);
  EXPECT_EQ(field_of(err), "labels");
  EXPECT_THAT(message_of(err), HasSubstr("at most 64 labels"));
}

} // namespace
} // namespace polymesh
