/* Unit tests of transport_sns's pieces that need no network: the XML
 * reader (AWS answers as fauxqs and AWS write them, and every kind of
 * malformed document), query-protocol form encoding, the PublishBatch
 * request, error answers in both protocols, which errors are transient,
 * the backoff's bounds, topic globs, and validate() on bad settings. The
 * plugin's source is included, so its static functions are at hand.
 * tests/integration/sns_fanout.sh runs it in plantd against fauxqs and a
 * scripted fake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "transport_sns.c"

/* ---- a mock host ------------------------------------------------------------ */

static struct {
	char err_key[64], err[512];
	const char *hdr_name, *hdr_value; /* the one header results have */
	uint64_t now;
} mock;

static void m_log(plant_instance *self, int level, const char *fmt, ...)
{
	(void)self;
	(void)level;
	(void)fmt;
}

static void m_error(plant_instance *self, const char *key, const char *fmt, ...)
{
	va_list ap;
	(void)self;
	snprintf(mock.err_key, sizeof mock.err_key, "%s", key ? key : "");
	va_start(ap, fmt);
	vsnprintf(mock.err, sizeof mock.err, fmt, ap);
	va_end(ap);
}

static uint64_t m_now_ms(plant_instance *self)
{
	(void)self;
	return mock.now;
}

static const char *m_result_header(const struct plant_http_result *res, const char *name)
{
	(void)res;
	if (mock.hdr_name && strcasecmp(name, mock.hdr_name) == 0)
		return mock.hdr_value;
	return NULL;
}

static const char *m_topic(const plant_msg *m)
{
	(void)m;
	return "cicd.events";
}

static const char *m_id(const plant_msg *m)
{
	(void)m;
	return "000001a2092366f400000000";
}

static const char *m_body_text(const plant_msg *m, size_t *len)
{
	(void)m;
	static const char body[] = "{\"event\":\"deploy\",\"note\":\"a & b = c\"}";
	*len = sizeof body - 1;
	return body;
}

static const char *m_attr(const plant_msg *m, const char *name)
{
	(void)m;
	return strcmp(name, "origin") == 0 ? "line 7" : NULL;
}

static const struct plant_host_api api = {
	.struct_size = sizeof(struct plant_host_api),
	.abi_major = PLANT_ABI_MAJOR,
	.abi_minor = PLANT_ABI_MINOR,
	.log = m_log,
	.error = m_error,
	.now_ms = m_now_ms,
	.msg_topic = m_topic,
	.msg_id = m_id,
	.msg_body_text = m_body_text,
	.msg_attr = m_attr,
	.http_result_header = m_result_header,
};

static struct xnode *parse(const char *s)
{
	return xml_parse(s, strlen(s));
}

/* ---- XML ----------------------------------------------------------------------- */

static void test_xml_publish_batch_answer(void **st)
{
	(void)st;
	/* as fauxqs writes it: pretty-printed, with a namespace */
	struct xnode *root = parse(
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<PublishBatchResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
		"  <PublishBatchResult>\n"
		"    <Successful><member><Id>e0</Id><MessageId>m-0</MessageId></member>"
		"<member><Id>e2</Id><MessageId>m-2</MessageId></member></Successful>"
		"<Failed><member><Id>e1</Id><Code>InternalError</Code><Message>a &lt;b&gt; &amp; "
		"&quot;c&quot; &apos;d&apos; &#65;&#x42;&#233;&#x1F600;</Message>"
		"<SenderFault>false</SenderFault></member></Failed>\n"
		"  </PublishBatchResult>\n"
		"  <ResponseMetadata>\n    <RequestId>r-1</RequestId>\n  </ResponseMetadata>\n"
		"</PublishBatchResponse>\n");
	assert_non_null(root);
	assert_string_equal(root->name, "PublishBatchResponse");
	const struct xnode *res = xml_child(root, "PublishBatchResult");
	assert_non_null(res);
	const struct xnode *ok = xml_child(res, "Successful");
	assert_non_null(ok);
	assert_string_equal(xml_text(ok->child, "Id"), "e0");
	assert_string_equal(xml_text(ok->child->next, "MessageId"), "m-2");
	const struct xnode *bad = xml_child(res, "Failed");
	assert_string_equal(xml_text(bad->child, "Code"), "InternalError");
	assert_string_equal(xml_text(bad->child, "Message"),
			    "a <b> & \"c\" 'd' AB\xC3\xA9\xF0\x9F\x98\x80");
	assert_string_equal(xml_text(xml_child(root, "ResponseMetadata"), "RequestId"), "r-1");
	assert_null(xml_text(root, "Nope"));
	xml_free(root);
}

static void test_xml_forms(void **st)
{
	(void)st;
	/* a BOM, comments, a prefix, CDATA, an empty element, attributes */
	struct xnode *root = parse("\xEF\xBB\xBF<!-- hi --><sns:A xmlns:sns='x' b=\"1\">"
				   "<sns:B><![CDATA[<raw & text>]]></sns:B><C/><D k='v' /><E></E>"
				   "<!-- inside --><?pi x?></sns:A><!-- after -->\n");
	assert_non_null(root);
	assert_string_equal(root->name, "A");
	assert_string_equal(xml_text(root, "B"), "<raw & text>");
	assert_string_equal(xml_text(root, "C"), "");
	assert_string_equal(xml_text(root, "D"), "");
	assert_string_equal(xml_text(root, "E"), "");
	assert_non_null(xml_find(root, "E"));
	xml_free(root);
}

static void test_xml_malformed(void **st)
{
	(void)st;
	static const char *const bad[] = {
		"",
		"   ",
		"not xml",
		"{\"QueueUrls\": []}",
		"<A>",
		"<A><B></A></B>",
		"<A></B>",
		"<A>x</A>trailing",
		"<A/><B/>",
		"<A>&unknown;</A>",
		"<A>&#0;</A>",
		"<A>&#xD800;</A>",
		"<A>&#x110000;</A>",
		"<A>&#;</A>",
		"<A>& b</A>",
		"<A b=1/>",
		"<A b=\"1/>",
		"<!DOCTYPE A [<!ENTITY x \"y\">]><A>&x;</A>",
		"<A><!DOCTYPE B></A>",
		"<A><!-- never closed</A>",
		"<A><![CDATA[never closed</A>",
		"<>",
		"</A>",
		"<PublishBatchResponse><PublishBatchResult><Successful><member><Id>e0</Id>",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct xnode *root = parse(bad[i]);
		if (root)
			fail_msg("accepted as XML: %s", bad[i]);
	}
	assert_null(xml_parse(NULL, 0));
	/* nested too deep */
	struct buf deep = {0};
	for (int i = 0; i < XML_MAX_DEPTH + 2; i++)
		buf_add(&deep, "<a>", 3);
	for (int i = 0; i < XML_MAX_DEPTH + 2; i++)
		buf_add(&deep, "</a>", 4);
	assert_null(xml_parse(deep.p, deep.len));
	buf_free(&deep);
	/* a prefix of a good document is never good */
	const char *good = "<R><S><M><Id>e0</Id></M></S></R>";
	struct xnode *root = parse(good);
	assert_non_null(root);
	xml_free(root);
	for (size_t n = 0; n < strlen(good); n++)
		assert_null(xml_parse(good, n));
}

/* ---- requests ----------------------------------------------------------------- */

static void test_form_encoding(void **st)
{
	(void)st;
	struct buf b = {0};
	form_param(&b, "a b&c=d/é~-_.", strlen("a b&c=d/é~-_."), "Key.%d", 1);
	form_param(&b, "", 0, "Empty");
	assert_string_equal(b.p, "Key.1=a%20b%26c%3Dd%2F%C3%A9~-_.&Empty=");
	buf_free(&b);
}

static void test_publish_batch_request(void **st)
{
	(void)st;
	struct tsns t = {.api = &api, .n_attr_names = 1, .group_id = ""};
	t.attr_names[0] = "origin";
	set_topic(&t, "arn:aws:sns:us-east-1:000000000000:plant-events");
	const plant_msg *msgs[2] = {(const plant_msg *)&t, (const plant_msg *)&t};
	struct buf b = {0};
	build_publish_batch(&t, msgs, 2, &b);
	assert_false(b.oom);
	const char *want_parts[] = {
		"Action=PublishBatch&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A"
		"000000000000%3Aplant-events&",
		"PublishBatchRequestEntries.member.1.Id=e0&",
		"PublishBatchRequestEntries.member.1.Message=%7B%22event%22%3A%22deploy%22%2C%22note"
		"%22%3A%22a%20%26%20b%20%3D%20c%22%7D&",
		"PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Name=plantd_topic&"
		"PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.DataType=String&"
		"PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.StringValue="
		"cicd.events",
		"PublishBatchRequestEntries.member.1.MessageAttributes.entry.2.Name=plantd_id&",
		"PublishBatchRequestEntries.member.1.MessageAttributes.entry.3.Name=origin&",
		"entry.3.Value.StringValue=line%207",
		"PublishBatchRequestEntries.member.2.Id=e1&",
	};
	for (size_t i = 0; i < sizeof want_parts / sizeof want_parts[0]; i++)
		if (!strstr(b.p, want_parts[i]))
			fail_msg("no '%s' in %s", want_parts[i], b.p);
	assert_null(strstr(b.p, "MessageGroupId"));
	buf_free(&b);
	/* a FIFO topic: group and deduplication ids */
	set_topic(&t, "arn:aws:sns:us-east-1:000000000000:plant-events.fifo");
	assert_true(t.fifo);
	build_publish_batch(&t, msgs, 1, &b);
	assert_non_null(strstr(b.p, "member.1.MessageGroupId=cicd.events&"));
	assert_non_null(strstr(b.p, "member.1.MessageDeduplicationId=000001a2092366f400000000&"));
	buf_free(&b);
	/* what a message costs: body and attributes */
	assert_true(entry_size(&t, msgs[0]) > 38 + strlen("cicd.events") + strlen("line 7"));
	set_topic(&t, NULL);
}

/* ---- answers -------------------------------------------------------------------- */

static struct plant_http_result result(long http, const char *body)
{
	return (struct plant_http_result){.status = PLANT_OK,
					  .http_status = http,
					  .body = body,
					  .body_len = strlen(body),
					  .error = ""};
}

static void test_error_answers(void **st)
{
	(void)st;
	struct aws_err e;
	char why[800];

	/* SNS: an XML ErrorResponse */
	struct plant_http_result r = result(
		400, "<ErrorResponse xmlns=\"x\"><Error><Type>Sender</Type><Code>Throttling"
		     "</Code><Message>Rate exceeded</Message></Error><RequestId>r-9</RequestId>"
		     "</ErrorResponse>");
	mock.hdr_name = "x-amzn-RequestId";
	mock.hdr_value = "r-9";
	assert_false(answer_ok(&api, PLANT_OK, &r, &e));
	assert_string_equal(e.code, "Throttling");
	assert_string_equal(e.message, "Rate exceeded");
	assert_true(err_transient(&e));
	err_describe(&e, why, sizeof why);
	assert_string_equal(why, "HTTP 400 Throttling: Rate exceeded (request id r-9)");

	/* SQS: a JSON error */
	r = result(400, "{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\","
			"\"message\":\"The specified queue does not exist.\"}");
	mock.hdr_name = NULL;
	assert_false(answer_ok(&api, PLANT_OK, &r, &e));
	assert_string_equal(e.code, "QueueDoesNotExist");
	assert_string_equal(e.message, "The specified queue does not exist.");
	assert_true(err_queue_gone(&e));
	assert_false(err_transient(&e));

	/* no code in the body: the header's, and an excerpt of the body */
	r = result(403, "forbidden\n<html>");
	mock.hdr_name = "x-amzn-query-error";
	mock.hdr_value = "AWS.SimpleQueueService.NonExistentQueue;Sender";
	assert_false(answer_ok(&api, PLANT_OK, &r, &e));
	assert_string_equal(e.code, "AWS.SimpleQueueService.NonExistentQueue");
	assert_string_equal(e.message, "forbidden <html>");
	mock.hdr_name = NULL;

	/* 5xx with nothing at all */
	r = result(503, "");
	assert_false(answer_ok(&api, PLANT_OK, &r, &e));
	assert_true(err_transient(&e));
	err_describe(&e, why, sizeof why);
	assert_string_equal(why, "HTTP 503 error");

	/* bad credentials: not transient, NotFound: the topic is gone */
	r = result(403, "<ErrorResponse><Error><Code>InvalidClientTokenId</Code><Message>The "
			"security token included in the request is invalid.</Message></Error>"
			"</ErrorResponse>");
	assert_false(answer_ok(&api, PLANT_OK, &r, &e));
	assert_false(err_transient(&e));
	r = result(404, "<ErrorResponse><Error><Code>NotFound</Code><Message>Topic does not "
			"exist</Message></Error></ErrorResponse>");
	assert_false(answer_ok(&api, PLANT_OK, &r, &e));
	assert_true(err_topic_gone(&e));

	/* no answer */
	r = (struct plant_http_result){.status = PLANT_E_TIMEOUT, .error = "timed out"};
	assert_false(answer_ok(&api, PLANT_OK, &r, &e));
	assert_true(err_transient(&e));
	err_describe(&e, why, sizeof why);
	assert_string_equal(why, "no answer: timed out (timeout)");

	/* the host refused the call */
	assert_false(answer_ok(&api, PLANT_E_CONFIG, NULL, &e));
	assert_int_equal(e.status, PLANT_E_CONFIG);
	assert_non_null(strstr(e.message, "no AWS credentials"));

	/* 200 is fine here; the caller checks the shape */
	r = result(200, "<X/>");
	assert_true(answer_ok(&api, PLANT_OK, &r, &e));
}

/* ---- the rest --------------------------------------------------------------------- */

static void test_backoff(void **st)
{
	(void)st;
	struct tsns t = {.api = &api, .retry_base_ms = 200, .retry_max_ms = 5000, .rng = 42};
	for (int round = 0; round < 200; round++) {
		uint64_t d = backoff(&t, 1);
		assert_true(d >= 100 && d <= 200);
		d = backoff(&t, 3);
		assert_true(d >= 400 && d <= 800);
		d = backoff(&t, 60);
		assert_true(d >= 2500 && d <= 5000);
	}
}

static void test_glob(void **st)
{
	(void)st;
	assert_true(glob_match("cicd.*", "cicd.events.in"));
	assert_true(glob_match("cicd.events", "cicd.events"));
	assert_false(glob_match("cicd.events", "cicd.events.in"));
	assert_true(glob_match("*.in", "cicd.events.in"));
	assert_true(glob_match("cicd.event?", "cicd.events"));
	assert_false(glob_match("health.*", "cicd.events.in"));
}

/* validate KEY=JSON...: what validate() says of the defaults plus these. */
static int validate_with(const char *json)
{
	json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:[], s:s, s:[], s:i, s:s, s:i, s:i, s:i, "
			      "s:s, s:s, s:i, s:i, s:b}",
			      "endpoint", "http://127.0.0.1:1", "sqs_endpoint", "", "region", "",
			      "topic_arn", "", "subscribe", "queue", "", "attributes", "batch", 50,
			      "message_group_id", "", "timeout", 10000, "retry_base", 200,
			      "retry_max", 20000, "receive_queue", "", "publish_topic", "",
			      "wait_time", 20000, "visibility_timeout", 30000, "queue_policy", 1);
	json_object_set_new(c, "topic_name", json_string(""));
	json_t *over = json_loads(json, 0, NULL);
	assert_non_null(over);
	json_object_update(c, over);
	json_decref(over);
	mock.err_key[0] = mock.err[0] = '\0';
	int rc = tsns_validate(NULL, &api, c);
	json_decref(c);
	return rc;
}

static void expect_refused(const char *json, const char *key, const char *text)
{
	if (validate_with(json) != PLANT_E_CONFIG)
		fail_msg("accepted: %s", json);
	assert_string_equal(mock.err_key, key);
	if (!strstr(mock.err, text))
		fail_msg("for %s: '%s' lacks '%s'", json, mock.err, text);
}

static void test_validate(void **st)
{
	(void)st;
	assert_int_equal(validate_with("{\"topic_name\": \"t\", \"subscribe\": [\"a.*\"]}"),
			 PLANT_OK);
	assert_int_equal(
		validate_with("{\"topic_arn\": \"arn:aws:sns:us-east-1:1:t\", "
			      "\"receive_queue\": \"node-a\", \"publish_topic\": \"x.in\"}"),
		PLANT_OK);
	expect_refused("{\"subscribe\": [\"a\"]}", "topic_arn", "exactly one");
	expect_refused("{\"topic_name\": \"t\", \"topic_arn\": \"arn:x\", \"subscribe\": [\"a\"]}",
		       "topic_name", "exactly one");
	expect_refused("{\"topic_arn\": \"t\", \"subscribe\": [\"a\"]}", "topic_arn", "not an ARN");
	expect_refused("{\"topic_name\": \"a b\", \"subscribe\": [\"a\"]}", "topic_name",
		       "topic name");
	expect_refused("{\"topic_name\": \"t\"}", "", "nothing to do");
	expect_refused("{\"topic_name\": \"t\", \"subscribe\": [\"a\"], \"queue\": \"q\"}", "queue",
		       "not both");
	expect_refused("{\"topic_name\": \"t\", \"subscribe\": [\"\"]}", "subscribe", "non-empty");
	expect_refused("{\"topic_name\": \"t\", \"queue\": \"q\", \"attributes\": [\"AWS.x\"]}",
		       "attributes", "AWS.x");
	expect_refused("{\"topic_name\": \"t\", \"queue\": \"q\", \"attributes\": [\"plantd_id\"]}",
		       "attributes", "plantd_id");
	expect_refused("{\"topic_name\": \"t\", \"queue\": \"q\", \"attributes\": "
		       "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]}",
		       "attributes", "at most 8");
	expect_refused("{\"topic_name\": \"t\", \"queue\": \"q\", \"batch\": 0}", "batch", "1 to");
	expect_refused("{\"topic_name\": \"t\", \"queue\": \"q\", \"retry_max\": 100}", "retry_max",
		       "retry_base");
	expect_refused("{\"topic_name\": \"t\", \"receive_queue\": \"q\"}", "publish_topic",
		       "go together");
	expect_refused("{\"topic_name\": \"t\", \"receive_queue\": \"a.b\", \"publish_topic\": "
		       "\"x\"}",
		       "receive_queue", "SQS queue name");
	expect_refused("{\"topic_name\": \"t\", \"subscribe\": [\"cicd.*\"], \"receive_queue\": "
		       "\"q\", \"publish_topic\": \"cicd.in\"}",
		       "publish_topic", "would be sent out again");
	expect_refused("{\"topic_name\": \"t\", \"receive_queue\": \"q\", \"publish_topic\": "
		       "\"x\", \"wait_time\": 21000}",
		       "wait_time", "0 to 20");
	expect_refused("{\"topic_name\": \"t\", \"queue\": \"q\", \"endpoint\": \"ftp://x\"}",
		       "endpoint", "http://");
	/* no endpoint: a region from somewhere */
	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	expect_refused("{\"topic_name\": \"t\", \"queue\": \"q\", \"endpoint\": \"\"}", "region",
		       "region");
	assert_int_equal(validate_with("{\"topic_name\": \"t\", \"queue\": \"q\", \"endpoint\": "
				       "\"\", \"region\": \"eu-west-1\"}"),
			 PLANT_OK);
}

static void test_service_url(void **st)
{
	(void)st;
	char *u = service_url("http://127.0.0.1:4566", "sns", "x");
	assert_string_equal(u, "http://127.0.0.1:4566/");
	free(u);
	u = service_url("http://h/", "sqs", "x");
	assert_string_equal(u, "http://h/");
	free(u);
	u = service_url("", "sqs", "eu-west-1");
	assert_string_equal(u, "https://sqs.eu-west-1.amazonaws.com/");
	free(u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_xml_publish_batch_answer),
		cmocka_unit_test(test_xml_forms),
		cmocka_unit_test(test_xml_malformed),
		cmocka_unit_test(test_form_encoding),
		cmocka_unit_test(test_publish_batch_request),
		cmocka_unit_test(test_error_answers),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_glob),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_service_url),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
