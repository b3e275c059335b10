#include "mesh/domain/error.hpp"
#include "mesh/domain/selector.hpp"

#include <algorithm>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <string>
#include <vector>

// Most tables here are translated from Kubernetes' own
// `k8s.io/apimachinery/pkg/labels/selector_test.go`, so that the two parsers
// keep accepting the same language and answering the same matches.

namespace polymesh {
namespace {

using op = requirement::op;
using ::testing::HasSubstr;

selector parse_ok(const std::string& text) {
  auto sel = selector::parse(text);
  EXPECT_TRUE(sel) << "'" << text << "': " << message_of(sel.error());
  return sel ? *sel : selector{};
}

bool matches(const std::string& text, const label_map& labels) {
  return parse_ok(text).matches(labels);
}

struct req_spec {
  std::string key;
  op oper;
  std::vector<std::string> values;
};

void expect_requirements(const std::string& text, const std::vector<req_spec>& want) {
  auto sel = parse_ok(text);
  const auto& got = sel.requirements();
  ASSERT_EQ(got.size(), want.size()) << text;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].key, want[i].key) << text << " #" << i;
    EXPECT_EQ(got[i].oper, want[i].oper) << text << " #" << i;
    EXPECT_EQ(got[i].values, want[i].values) << text << " #" << i;
  }
}

// This test ensures k8s' good selectors print back as written, minus blanks.
TEST(SelectorParse, GoodStringsRoundTrip) {
  const std::vector<std::string> good = {
      "x=a,y=b,z=c", "",        "x!=a,y=b", "x=",  "x= ",
      "x=,z= ",      "x= ,z= ", "!x",       "x>1", "x>1,z<5",
  };
  for (const auto& text : good) {
    auto expected = text;
    expected.erase(std::remove(expected.begin(), expected.end(), ' '), expected.end());
    EXPECT_EQ(parse_ok(text).to_string(), expected) << text;
  }
}

// This test ensures k8s' bad selectors (TestSelectorParse) are invalid_selector errors.
TEST(SelectorParse, BadStringsAreRejected) {
  for (const std::string text : {"x=a||y=b", "x==a==b", "!x=a", "x<a"}) {
    auto sel = selector::parse(text);
    ASSERT_FALSE(sel) << text;
    EXPECT_EQ(code_of(sel.error()), errc::invalid_selector) << text;
  }
}

// This test ensures the parse does not depend on the written order of requirements.
TEST(SelectorParse, IsDeterministic) {
  EXPECT_EQ(parse_ok("x=a,a=x").to_string(), parse_ok("a=x,x=a").to_string());
  EXPECT_EQ(parse_ok("x=a,a=x").to_string(), "a=x,x=a");
}

// This test ensures an empty or all-blank selector is empty and matches anything.
TEST(SelectorParse, BlankSelectorMatchesEverything) {
  for (const std::string text : {"", " ", " \t\r\n "}) {
    auto sel = parse_ok(text);
    EXPECT_TRUE(sel.empty()) << text;
    EXPECT_TRUE(sel.matches({})) << text;
    EXPECT_TRUE(sel.matches({{"x", "y"}})) << text;
    EXPECT_EQ(sel.to_string(), "") << text;
  }
  selector everything;
  EXPECT_TRUE(everything.empty());
  EXPECT_TRUE(everything.matches({{"x", "y"}}));
  EXPECT_EQ(everything.first_unmet({{"x", "y"}}), nullptr);
}

// This test ensures parsed requirements equal k8s' TestSetSelectorParser valid rows.
TEST(SelectorParse, SetBasedTable) {
  expect_requirements("\rx", {{"x", op::exists, {}}});
  expect_requirements("this-is-a-dns.domain.com/key-with-dash",
                      {{"this-is-a-dns.domain.com/key-with-dash", op::exists, {}}});
  expect_requirements(
      "this-is-another-dns.domain.com/key-with-dash in (so,what)",
      {{"this-is-another-dns.domain.com/key-with-dash", op::in, {"so", "what"}}});
  expect_requirements(
      "0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)",
      {{"0.1.2.domain/99", op::not_in, {"10.10.100.1", "tick.tack.clock"}}});
  expect_requirements("foo  in\t (abc)", {{"foo", op::in, {"abc"}}});
  expect_requirements("x notin\n (abc)", {{"x", op::not_in, {"abc"}}});
  expect_requirements("x  notin\t\t\t(abc,def)", {{"x", op::not_in, {"abc", "def"}}});
  expect_requirements("x in (abc,def)", {{"x", op::in, {"abc", "def"}}});
  expect_requirements("x in (abc,)", {{"x", op::in, {"", "abc"}}});
  expect_requirements("x in (abc,abc)", {{"x", op::in, {"abc"}}});
  expect_requirements("x in ()", {{"x", op::in, {""}}});
  expect_requirements("x in (a,,)", {{"x", op::in, {"", "a"}}});
  expect_requirements("x in (a,,,)", {{"x", op::in, {"", "a"}}});
  expect_requirements("x in (a,,,,,,)", {{"x", op::in, {"", "a"}}});
  expect_requirements("x in (a,,a,,a,,a,,)", {{"x", op::in, {"", "a"}}});
  expect_requirements("x notin (abc,,def),bar,z in (),w",
                      {{"bar", op::exists, {}},
                       {"w", op::exists, {}},
                       {"x", op::not_in, {"", "abc", "def"}},
                       {"z", op::in, {""}}});
  expect_requirements("x,y in (a)", {{"x", op::exists, {}}, {"y", op::in, {"a"}}});
  expect_requirements("x=a", {{"x", op::equals, {"a"}}});
  expect_requirements("x>1", {{"x", op::greater_than, {"1"}}});
  expect_requirements("x<7", {{"x", op::less_than, {"7"}}});
  expect_requirements("x=a,y!=b",
                      {{"x", op::equals, {"a"}}, {"y", op::not_equals, {"b"}}});
  expect_requirements("x=a,y!=b,z in (h,i,j)", {{"x", op::equals, {"a"}},
                                                {"y", op::not_equals, {"b"}},
                                                {"z", op::in, {"h", "i", "j"}}});
  expect_requirements("x notin ( )", {{"x", op::not_in, {""}}});
  expect_requirements("x notin (, a)", {{"x", op::not_in, {"", "a"}}});
  expect_requirements("a ", {{"a", op::exists, {}}});
  expect_requirements("a in (x,y,notin, z,in)",
                      {{"a", op::in, {"in", "notin", "x", "y", "z"}}});
}

// This test ensures the invalid rows of k8s' TestSetSelectorParser are refused.
TEST(SelectorParse, SetBasedTableRejects) {
  for (const std::string text :
       {"x=a||y=b", "x,,y", ",x,y", "x nott in (y)", "a in (xyz),",
        "a in (xyz)b notin ()", "a in (xyz abc)", "a notin(", "a (", "("}) {
    auto sel = selector::parse(text);
    ASSERT_FALSE(sel) << text;
    EXPECT_EQ(code_of(sel.error()), errc::invalid_selector) << text;
  }
}

// This test ensures tokens split as in k8s' lexer (TestLexer, TestLexerSequence).
TEST(SelectorParse, TokensSplitAsKubernetesLexer) {
  expect_requirements("key in ( value )", {{"key", op::in, {"value"}}});
  expect_requirements("key notin ( value )", {{"key", op::not_in, {"value"}}});
  expect_requirements("key in ( value1, value2 )",
                      {{"key", op::in, {"value1", "value2"}}});
  expect_requirements("!key", {{"key", op::does_not_exist, {}}});
  expect_requirements("x in (),y", {{"x", op::in, {""}}, {"y", op::exists, {}}});
  expect_requirements("key>2", {{"key", op::greater_than, {"2"}}});
  expect_requirements("key<1", {{"key", op::less_than, {"1"}}});
  expect_requirements("a!=b", {{"a", op::not_equals, {"b"}}});
  expect_requirements("a==b", {{"a", op::equals, {"b"}}});
  expect_requirements("a = b , ! c",
                      {{"a", op::equals, {"b"}}, {"c", op::does_not_exist, {}}});
  // `~` and `||` are identifier characters, so they fail as label keys.
  for (const std::string text : {"~", "||"}) {
    auto sel = selector::parse(text);
    ASSERT_FALSE(sel) << text;
    EXPECT_EQ(position_of(sel.error()), 0) << text;
    EXPECT_THAT(message_of(sel.error()), HasSubstr("label key name")) << text;
  }
}

// This test ensures `in`/`notin` are operators only right after a key.
TEST(SelectorParse, InAndNotinAreWordsOutsideOperatorPosition) {
  expect_requirements("notin=in", {{"notin", op::equals, {"in"}}});
  expect_requirements("in in (in,notin)", {{"in", op::in, {"in", "notin"}}});
  expect_requirements("!in", {{"in", op::does_not_exist, {}}});
  EXPECT_TRUE(matches("notin=in", {{"notin", "in"}}));
}

// This test ensures only k8s' whitespace separates tokens; '\v' is a key character.
TEST(SelectorParse, OnlyKubernetesWhitespaceIsBlank) {
  expect_requirements(" \t\r\nx\t=\ny\r", {{"x", op::equals, {"y"}}});
  auto sel = selector::parse("x\v");
  ASSERT_FALSE(sel);
  EXPECT_EQ(position_of(sel.error()), 0);
}

// This test ensures a NUL byte is refused rather than silently ending the input.
TEST(SelectorParse, NulByteIsRejected) {
  auto sel = selector::parse(std::string{"x,y\0,z", 6});
  ASSERT_FALSE(sel);
  EXPECT_EQ(position_of(sel.error()), 2);
}

// This test ensures a key given twice keeps both requirements, in written order.
TEST(SelectorParse, RepeatedKeysAreAnded) {
  EXPECT_EQ(parse_ok("x=a,x!=b").to_string(), "x=a,x!=b");
  EXPECT_EQ(parse_ok("x!=b,x=a").to_string(), "x!=b,x=a");
  EXPECT_FALSE(matches("x=a,x=b", {{"x", "a"}}));
  EXPECT_TRUE(matches("x,x!=b", {{"x", "a"}}));
}

// This test ensures `requirements()` is in key order with sorted, unique values.
TEST(SelectorParse, RequirementsAreSortedAndDeduplicated) {
  auto sel = parse_ok("zone notin (b,a,b),env in (prod,dev,prod),!gpu");
  ASSERT_EQ(sel.requirements().size(), 3u);
  EXPECT_EQ(sel.requirements()[0].key, "env");
  EXPECT_EQ(sel.requirements()[0].values, (std::vector<std::string>{"dev", "prod"}));
  EXPECT_EQ(sel.requirements()[1].key, "gpu");
  EXPECT_EQ(sel.requirements()[1].oper, op::does_not_exist);
  EXPECT_TRUE(sel.requirements()[1].values.empty());
  EXPECT_EQ(sel.requirements()[2].values, (std::vector<std::string>{"a", "b"}));
}

// This test ensures selector keys and values obey the label rules at their position.
TEST(SelectorParse, KeysAndValuesFollowLabelRules) {
  for (const std::string text : {"1foo in (bar)", "1234 in (bar)", "x in (foo)",
                                 "x notin (foo)", "y>1", "z<6", "example.com/x=Value_1"})
    parse_ok(text);
  struct row {
    std::string text;
    int64_t position;
    std::string message;
  };
  const std::vector<row> rows = {
      {std::string(254, 'a'), 0, "label key name must be 63 characters or fewer"},
      {"x16=" + std::string(254, 'a'), 4, "label value must be 63 characters or fewer"},
      {"foo>bar", 4, "value of '>' must be an integer"},
      {"barz<blah", 5, "value of '<' must be an integer"},
      {"Bad.Prefix/x", 0, "label key prefix"},
      {"-x=a", 0, "label key name must consist of alphanumeric characters"},
      {"x=-a", 2, "label value must be empty or consist of"},
      {"x in (a, -b)", 9, "label value"},
      {"x=a||y", 2, "label value"},
  };
  for (const auto& r : rows) {
    auto sel = selector::parse(r.text);
    ASSERT_FALSE(sel) << r.text;
    EXPECT_EQ(code_of(sel.error()), errc::invalid_selector) << r.text;
    EXPECT_EQ(position_of(sel.error()), r.position) << r.text;
    EXPECT_THAT(message_of(sel.error()), HasSubstr(r.message)) << r.text;
  }
}

// This test ensures each parse error says what was expected and where it failed.
TEST(SelectorErrors, ReportPositionAndExpectation) {
  struct row {
    std::string text;
    int64_t position;
    std::string message;
  };
  const std::vector<row> rows = {
      {"env prod", 4, "expected an operator after key 'env'"},
      {"x nott in (y)", 2, "expected an operator after key 'x'"},
      {"a (", 2, "expected an operator after key 'a'"},
      {"x in (a,b", 9, "unterminated value list, expected ')'"},
      {"a notin(", 8, "unterminated value list, expected ')'"},
      {"x in a", 5, "expected '(' after 'in'"},
      {"x notin", 7, "expected '(' after 'notin'"},
      {"x in (a b)", 8, "expected ',' or ')' after value 'a'"},
      {"x in (a,=)", 8, "expected a value, ',' or ')'"},
      {"x>a", 2, "value of '>' must be an integer"},
      {"x<1.5", 2, "value of '<' must be an integer"},
      {"x>", 2, "value of '>' must be an integer"},
      {"x>,y", 2, "value of '>' must be an integer"},
      {"x>99999999999999999999", 2,
       "value of '>' must be an integer in the 64-bit range"},
      {"x>-1", 2,
       "value of '>' must be an integer without a sign, as label values start with a "
       "digit "
       "or letter"},
      {"x<+1", 2,
       "value of '<' must be an integer without a sign, as label values start with a "
       "digit "
       "or letter"},
      {"x>=1", 2, "expected a value after '>'"},
      {"x=(a)", 2, "expected a value after '='"},
      {"(", 0, "expected a label key or '!'"},
      {"=a", 0, "expected a label key or '!'"},
      {",x", 0, "expected a label key or '!'"},
      {"x,,y", 2, "expected a label key or '!' after ','"},
      {"x,", 2, "expected a label key or '!' after ','"},
      {"a in (xyz),", 11, "expected a label key or '!' after ','"},
      {"!", 1, "expected a label key after '!'"},
      {"!!x", 1, "expected a label key after '!'"},
      {"!x=a", 2, "expected ',' or end of selector after '!x'"},
      {"x==a==b", 4, "expected ',' or end of selector after 'x=a'"},
      {"a in (xyz)b notin ()", 10, "expected ',' or end of selector after 'a in (xyz)'"},
  };
  for (const auto& r : rows) {
    auto sel = selector::parse(r.text);
    ASSERT_FALSE(sel) << r.text;
    EXPECT_EQ(code_of(sel.error()), errc::invalid_selector) << r.text;
    EXPECT_EQ(position_of(sel.error()), r.position) << r.text;
    EXPECT_EQ(message_of(sel.error()), r.message) << r.text;
  }
}

// This test ensures errors name the field given to `parse`, `selector` by default.
TEST(SelectorErrors, CarryTheField) {
  auto named = selector::parse("x y", "runs.selector");
  ASSERT_FALSE(named);
  EXPECT_EQ(field_of(named.error()), "runs.selector");
  auto unnamed = selector::parse("x y");
  ASSERT_FALSE(unnamed);
  EXPECT_EQ(field_of(unnamed.error()), "selector");
}

// This test ensures matching agrees with Kubernetes' table (TestSelectorMatches).
TEST(SelectorMatches, KubernetesTable) {
  EXPECT_TRUE(matches("", {{"x", "y"}}));
  EXPECT_TRUE(matches("x=y", {{"x", "y"}}));
  EXPECT_TRUE(matches("x=y,z=w", {{"x", "y"}, {"z", "w"}}));
  EXPECT_TRUE(matches("x!=y,z!=w", {{"x", "z"}, {"z", "a"}}));
  EXPECT_TRUE(matches("x", {{"x", "z"}}));
  EXPECT_TRUE(matches("!x", {{"y", "z"}}));
  EXPECT_TRUE(matches("x>1", {{"x", "2"}}));
  EXPECT_TRUE(matches("x<1", {{"x", "0"}}));
  EXPECT_FALSE(matches("x=z", {}));
  EXPECT_FALSE(matches("x=y", {{"x", "z"}}));
  EXPECT_FALSE(matches("x=y,z=w", {{"x", "w"}, {"z", "w"}}));
  EXPECT_FALSE(matches("x!=y,z!=w", {{"x", "z"}, {"z", "w"}}));
  EXPECT_FALSE(matches("x", {{"y", "z"}}));
  EXPECT_FALSE(matches("!x", {{"x", "z"}}));
  EXPECT_FALSE(matches("x>1", {{"x", "0"}}));
  EXPECT_FALSE(matches("x<1", {{"x", "2"}}));

  const label_map labels = {{"foo", "bar"}, {"baz", "blah"}};
  EXPECT_TRUE(matches("foo=bar", labels));
  EXPECT_TRUE(matches("baz=blah", labels));
  EXPECT_TRUE(matches("foo=bar,baz=blah", labels));
  EXPECT_FALSE(matches("foo=blah", labels));
  EXPECT_FALSE(matches("baz=bar", labels));
  EXPECT_FALSE(matches("foo=bar,foobar=bar,baz=blah", labels));
}

// This test ensures set-based requirements match as in TestRequirementSelectorMatching.
TEST(SelectorMatches, SetBasedRequirements) {
  EXPECT_TRUE(matches("x in (foo),y notin (alpha)", {{"x", "foo"}, {"y", "baz"}}));
  EXPECT_FALSE(matches("x in (foo),y in (alpha)", {{"x", "foo"}, {"y", "baz"}}));
  EXPECT_TRUE(matches("x notin (),y", {{"y", ""}}));
  EXPECT_TRUE(matches("!x,y", {{"y", ""}}));
  EXPECT_FALSE(matches("x notin (),!y", {{"y", ""}}));
  EXPECT_FALSE(matches("x in ()", {{"y", "baz"}}));
  EXPECT_TRUE(matches("z>1", {{"z", "2"}}));
  EXPECT_FALSE(matches("z>1", {{"z", "v2"}}));
}

// This test ensures `!=` and `notin` hold for a missing key while `=` and `in` do not.
TEST(SelectorMatches, NegativeOperatorsMatchAbsentKey) {
  EXPECT_TRUE(matches("env!=prod", {}));
  EXPECT_TRUE(matches("env notin (prod,staging)", {{"zone", "eu"}}));
  EXPECT_FALSE(matches("env=prod", {}));
  EXPECT_FALSE(matches("env in (prod,staging)", {{"zone", "eu"}}));
  EXPECT_FALSE(matches("env notin (prod,staging)", {{"env", "staging"}}));
  EXPECT_TRUE(matches("env notin (prod,staging)", {{"env", "dev"}}));
}

// This test ensures empty values work both in lists and after `=`.
TEST(SelectorMatches, EmptyValues) {
  EXPECT_TRUE(matches("x in (,a)", {{"x", ""}}));
  EXPECT_TRUE(matches("x in (,a)", {{"x", "a"}}));
  EXPECT_FALSE(matches("x in (,a)", {}));
  EXPECT_TRUE(matches("x=", {{"x", ""}}));
  EXPECT_FALSE(matches("x=", {{"x", "a"}}));
  EXPECT_TRUE(matches("x!=", {{"x", "a"}}));
}

// This test ensures `>`/`<` compare integers and never match non-integer labels.
TEST(SelectorMatches, NumericComparisons) {
  EXPECT_TRUE(matches("x>5", {{"x", "10"}})); // numeric, not lexicographic
  EXPECT_FALSE(matches("x<5", {{"x", "10"}}));
  EXPECT_FALSE(matches("x>5", {{"x", "5"}}));
  EXPECT_FALSE(matches("x<5", {{"x", "5"}}));
  EXPECT_TRUE(matches("x>007", {{"x", "8"}}));
  EXPECT_TRUE(matches("x<1", {{"x", "-5"}}));
  EXPECT_TRUE(matches("x>1", {{"x", "+2"}}));
  EXPECT_TRUE(matches("x<9223372036854775807", {{"x", "-9223372036854775808"}}));
  for (const std::string value : {"v2", "1.5", "", " 2", "2 ", "0x10", "1e3", "+-2", "+",
                                  "99999999999999999999", "1_000"}) {
    EXPECT_FALSE(matches("x>0", {{"x", value}})) << "'" << value << "'";
    EXPECT_FALSE(matches("x<100", {{"x", value}})) << "'" << value << "'";
  }
  EXPECT_FALSE(matches("x>0", {}));
  EXPECT_FALSE(matches("x<0", {}));
}

// This test ensures a hand-built numeric requirement with a bad bound matches nothing.
TEST(SelectorMatches, MalformedNumericRequirementNeverMatches) {
  requirement no_value{"x", op::greater_than, {}};
  requirement not_integer{"x", op::less_than, {"ten"}};
  requirement two_values{"x", op::greater_than, {"1", "2"}};
  const label_map labels = {{"x", "5"}};
  EXPECT_FALSE(no_value.matches(labels));
  EXPECT_FALSE(not_integer.matches(labels));
  EXPECT_FALSE(two_values.matches(labels));
}

// This test ensures `first_unmet` returns the first failing requirement or nullptr.
TEST(SelectorFirstUnmet, ReturnsTheFailingRequirement) {
  auto sel = parse_ok("zone=eu,env=prod,gpu>2");
  const auto* unmet = sel.first_unmet({{"zone", "eu"}, {"env", "prod"}, {"gpu", "1"}});
  ASSERT_NE(unmet, nullptr);
  EXPECT_EQ(unmet->key, "gpu");
  EXPECT_EQ(unmet->to_string(), "gpu>2");
  EXPECT_EQ(unmet, &sel.requirements()[1]);

  unmet = sel.first_unmet({});
  ASSERT_NE(unmet, nullptr);
  EXPECT_EQ(unmet->to_string(), "env=prod");

  EXPECT_EQ(sel.first_unmet({{"zone", "eu"}, {"env", "prod"}, {"gpu", "4"}}), nullptr);
  EXPECT_EQ(sel.first_unmet({{"zone", "eu"}, {"env", "prod"}, {"gpu", "four"}}),
            &sel.requirements()[1]);
}

// This test ensures the canonical text matches Kubernetes' `String()` (TestToString).
TEST(SelectorToString, KubernetesTable) {
  EXPECT_EQ(parse_ok("z,y notin (jkl),x in (def,abc)").to_string(),
            "x in (abc,def),y notin (jkl),z");
  EXPECT_EQ(parse_ok("x notin (def,abc),y!=jkl,!z").to_string(),
            "x notin (abc,def),y!=jkl,!z");
  EXPECT_EQ(parse_ok("x notin (abc),y in (mno,jkl),z notin ()").to_string(),
            "x notin (abc),y in (jkl,mno),z notin ()");
  EXPECT_EQ(parse_ok("x>2,y<8,z").to_string(), "x>2,y<8,z");
  EXPECT_EQ(parse_ok("x in (,a)").to_string(), "x in (,a)");
  EXPECT_EQ(parse_ok("x in (a,,b)").to_string(), "x in (,a,b)");
}

// This test ensures `==` is read as `=` and printed as `=` (k8s would print `==`).
TEST(SelectorToString, DoubleEqualsPrintsAsEquals) {
  EXPECT_EQ(parse_ok("x=abc,y==jkl,z!=a,z").to_string(), "x=abc,y=jkl,z!=a,z");
}

// This test ensures each requirement prints canonically, sorting hand-built values.
TEST(SelectorToString, RequirementText) {
  EXPECT_EQ((requirement{"env", op::in, {"prod", "dev"}}.to_string()),
            "env in (dev,prod)");
  EXPECT_EQ((requirement{"env", op::not_in, {""}}.to_string()), "env notin ()");
  EXPECT_EQ((requirement{"env", op::equals, {"prod"}}.to_string()), "env=prod");
  EXPECT_EQ((requirement{"env", op::not_equals, {""}}.to_string()), "env!=");
  EXPECT_EQ((requirement{"gpu", op::greater_than, {"5"}}.to_string()), "gpu>5");
  EXPECT_EQ((requirement{"gpu", op::less_than, {"5"}}.to_string()), "gpu<5");
  EXPECT_EQ((requirement{"gpu", op::exists, {}}.to_string()), "gpu");
  EXPECT_EQ((requirement{"gpu", op::does_not_exist, {}}.to_string()), "!gpu");
}

// This test ensures the canonical text parses back to the same selector.
TEST(SelectorToString, ReparsesToItself) {
  for (const std::string text :
       {"b in (y,x,),a notin (),!c,d", "example.com/zone in (eu-1,us.2),tier!=db_1",
        "x>10,x<20", "in in (notin),notin", "x=,y= ,z==q"}) {
    auto once = parse_ok(text).to_string();
    EXPECT_EQ(parse_ok(once).to_string(), once) << text;
  }
}

// This test ensures a selector that no set of labels can meet (alone, or
// with a token's scope) is told apart from one that some can, with the key
// and the requirements that contradict each other named; `!=`, `notin` and
// `!key` are met by leaving the key out, and `07` and `7` are one number;
// no label value is a number below 0.
TEST(SelectorContradiction, NamesTheKeyThatNoValueMeets) {
  for (auto [text, also] :
       {std::pair{"env=prod,env=dev", ""}, std::pair{"env in (a,b),env notin (a,b)", ""},
        std::pair{"gpu,!gpu", ""}, std::pair{"env=prod", "!env"},
        std::pair{"cores>4,cores<5", ""}, std::pair{"cores>4,cores in (2,4)", ""},
        std::pair{"cores=abc,cores>1", ""}, std::pair{"env=prod", "env=dev"},
        std::pair{"cores>9223372036854775807", ""}, std::pair{"cores<0", ""},
        std::pair{"env=prod", "cores<0"}}) {
    SCOPED_TRACE(std::string{text} + " / " + also);
    auto why = parse_ok(text).contradiction(parse_ok(also));
    EXPECT_EQ(why.rfind("label '", 0), 0u) << why;
  }
  EXPECT_EQ(parse_ok("env=prod,env=dev").contradiction(),
            "label 'env' cannot meet all of env=dev, env=prod");
  for (auto [text, also] :
       {std::pair{"", ""}, std::pair{"env!=prod,env notin (dev),!env", ""},
        std::pair{"env in (a,b),env in (b,c),env!=a", ""},
        std::pair{"cores>4,cores<6", ""}, std::pair{"cores>4,cores!=5", ""},
        std::pair{"cores in (5,7),cores>6", ""}, std::pair{"cores<1", ""},
        std::pair{"cores>4,cores<6,cores!=5", ""},
        std::pair{"env=prod,tier=web", "env in (prod,qa)"},
        std::pair{"env!=dev", "env=prod"}}) {
    SCOPED_TRACE(std::string{text} + " / " + also);
    EXPECT_EQ(parse_ok(text).contradiction(parse_ok(also)), "");
  }
}

} // namespace
} // namespace polymesh
