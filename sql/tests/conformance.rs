//! Conformance with the AWS IoT SQL reference (version 2016-03-23): each test pins a documented
//! example or rule, through the public API the gateway uses.

use rulegate_sql::{
    ErrorKind, MessageContext, MqttProperties, Payload, Selected, Statement, Template,
};
use serde_json::{Value, json};

const TOPIC: &str = "things/myThings/thingOne";

fn message<'a>(payload: &'a Payload, raw: &'a [u8]) -> MessageContext<'a> {
    MessageContext {
        timestamp_ms: 1_481_825_251_155,
        client_id: Some("sensor-7"),
        ..MessageContext::new(TOPIC, payload, raw)
    }
}

/// The output line of `sql` for `payload` on TOPIC, or None when nothing is selected.
fn run(sql: &str, payload: &str) -> Option<String> {
    let statement = Statement::parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let parsed = Payload::parse(payload.as_bytes());
    let msg = message(&parsed, payload.as_bytes());
    statement.evaluate(&msg).map(|s| s.to_json_line(&msg))
}

/// The value of `expr` for `payload`, or None when it is Undefined.
fn eval_with(expr: &str, payload: &str) -> Option<Value> {
    let line = run(&format!("SELECT {expr} AS v FROM '#'"), payload).expect("selected");
    let mut output: Value = serde_json::from_str(&line).unwrap();
    output.as_object_mut().unwrap().remove("v")
}

fn eval(expr: &str) -> Option<Value> {
    eval_with(expr, "{}")
}

fn assert_evals(cases: &[(&str, Value)]) {
    for (expr, expected) in cases {
        assert_eq!(eval(expr).as_ref(), Some(expected), "{expr}");
    }
}

fn assert_undefined(exprs: &[&str]) {
    for expr in exprs {
        assert_eq!(eval(expr), None, "{expr} should be Undefined");
    }
}

fn load_error(sql: &str) -> rulegate_sql::SqlError {
    Statement::parse(sql).expect_err(sql)
}

// ---- SELECT ----

#[test]
fn select_star_passes_the_payload_through_byte_for_byte() {
    let raw = br#"{"color":"red",   "temperature":50}"#;
    let payload = Payload::parse(raw);
    let msg = message(&payload, raw);
    let selected = Statement::parse("SELECT * FROM 'things/#'")
        .unwrap()
        .evaluate(&msg)
        .unwrap();
    assert_eq!(selected, Selected::Payload);
    assert_eq!(&*selected.to_bytes(raw), raw);
    assert_eq!(
        selected.to_json_line(&msg),
        r#"{"color":"red","temperature":50}"#
    );
}

#[test]
fn select_fields_aliases_and_star_with_extras() {
    let payload = r#"{"color":"red", "temperature":50}"#;
    assert_eq!(
        run("SELECT color FROM '#'", payload).unwrap(),
        r#"{"color":"red"}"#
    );
    assert_eq!(
        run(
            "SELECT color as my_color, temperature as fahrenheit FROM '#'",
            payload
        )
        .unwrap(),
        r#"{"my_color":"red","fahrenheit":50}"#
    );
    assert_eq!(
        run("SELECT *, 15 as speed FROM '#'", payload).unwrap(),
        r#"{"color":"red","temperature":50,"speed":15}"#
    );
    assert_eq!(
        run(
            "SELECT (temperature - 32) * 5 / 9 AS celsius, upper(color) as my_color FROM '#'",
            payload
        )
        .unwrap(),
        r#"{"celsius":10,"my_color":"RED"}"#
    );
}

#[test]
fn select_value_outputs_bare_values_and_arrays() {
    assert_eq!(
        run("SELECT VALUE color FROM '#'", r#"{"color":"red"}"#).unwrap(),
        r#""red""#
    );
    assert_eq!(
        run(
            "SELECT VALUE arr FROM '#'",
            r#"{"a":{"b":"c"},"arr":[1,2,3,4]}"#
        )
        .unwrap(),
        "[1,2,3,4]"
    );
    // A field that happens to be called `value` is still a field.
    assert_eq!(
        run("SELECT value FROM '#'", r#"{"value":3}"#).unwrap(),
        r#"{"value":3}"#
    );
}

#[test]
fn nested_fields_and_array_indexing() {
    let payload = r#"{"color":{"red":255,"green":0},"arr":[{"x":1},{"x":2}]}"#;
    assert_eq!(
        run("SELECT color.red as red_value FROM '#'", payload).unwrap(),
        r#"{"red_value":255}"#
    );
    assert_eq!(eval_with("arr[1].x", payload), Some(json!(2)));
    assert_eq!(eval_with("arr[5].x", payload), None);
    assert_eq!(eval_with("color['green']", payload), Some(json!(0)));
}

#[test]
fn object_and_array_literals_build_nested_output() {
    let payload = r#"{"lat_long": [47.606,-122.332], "lat": 47.696, "long": -122.332}"#;
    assert_eq!(
        run(
            "SELECT {'latitude': get(lat_long, 0),'longitude':get(lat_long, 1)} as lat_long FROM '#'",
            payload
        )
        .unwrap(),
        r#"{"lat_long":{"latitude":47.606,"longitude":-122.332}}"#
    );
    assert_eq!(
        run("SELECT [lat,long] as lat_long FROM '#'", payload).unwrap(),
        r#"{"lat_long":[47.696,-122.332]}"#
    );
    assert_eq!(
        run(
            "SELECT lat AS state.desired.lat, long AS state.desired.long FROM '#'",
            payload
        )
        .unwrap(),
        r#"{"state":{"desired":{"lat":47.696,"long":-122.332}}}"#
    );
}

const SENML: &str = r#"{"e": [
    { "n": "temperature", "u": "Cel", "t": 1234, "v": 22.5 },
    { "n": "light", "u": "lm", "t": 1235, "v": 135 },
    { "n": "acidity", "u": "pH", "t": 1235, "v": 7 }]}"#;

#[test]
fn nested_queries_over_arrays() {
    assert_eq!(
        run(
            "SELECT (SELECT VALUE n FROM e) as sensors FROM 'my/topic'",
            SENML
        ),
        None,
        "topic outside FROM"
    );
    assert_eq!(
        run("SELECT (SELECT VALUE n FROM e) as sensors FROM '#'", SENML).unwrap(),
        r#"{"sensors":["temperature","light","acidity"]}"#
    );
    assert_eq!(
        run(
            "SELECT (SELECT v FROM e WHERE n = 'temperature') as temperature FROM '#'",
            SENML
        )
        .unwrap(),
        r#"{"temperature":[{"v":22.5}]}"#
    );
    assert_eq!(
        run(
            "SELECT get((SELECT v FROM e WHERE n = 'temperature'), 0).v as temperature FROM '#'",
            SENML
        )
        .unwrap(),
        r#"{"temperature":22.5}"#
    );
}

#[test]
fn transform_enriches_an_array_with_a_nested_query_object() {
    let payload = r#"{"data2":{"a":"first attribute","b":"second attribute",
        "c":[{"x":{"someInt":5},"y":true},{"x":{"someInt":10},"y":false}]}}"#;
    assert_eq!(
        run(
            "select value transform('enrichArray', (select a, b from data2), (select value c from data2)) from '#'",
            payload
        )
        .unwrap(),
        r#"[{"x":{"someInt":5},"y":true,"a":"first attribute","b":"second attribute"},{"x":{"someInt":10},"y":false,"a":"first attribute","b":"second attribute"}]"#
    );
}

// ---- FROM and WHERE ----

#[test]
fn from_matches_with_mqtt_wildcards() {
    let sql = "SELECT temperature AS t FROM 'things/+/thingOne'";
    assert_eq!(run(sql, r#"{"temperature":50}"#).unwrap(), r#"{"t":50}"#);
    assert_eq!(run("SELECT * FROM 'things/+'", "{}"), None);
    assert_eq!(run("SELECT * FROM 'things/#'", "{}").unwrap(), "{}");
}

#[test]
fn where_lets_only_true_through() {
    let payload = r#"{"color":"red", "temperature":40}"#;
    assert_eq!(
        run(
            "SELECT color FROM '#' WHERE temperature > 50 AND color <> 'red'",
            payload
        ),
        None
    );
    assert!(run("SELECT color FROM '#' WHERE temperature < 50", payload).is_some());
    assert!(run("SELECT color FROM '#' WHERE 'TRUE'", payload).is_some());
    // Undefined, non-Boolean and false all mean "no match".
    for condition in [
        "missing > 1",
        "temperature",
        "missing = missing",
        "false",
        "1 = 'a' AND x",
    ] {
        assert_eq!(
            run(&format!("SELECT * FROM '#' WHERE {condition}"), payload),
            None,
            "{condition}"
        );
    }
}

#[test]
fn where_on_a_binary_payload_uses_decode_of_encode() {
    // `80` parses as JSON here; the documented rule still selects it.
    assert_eq!(
        run(
            "SELECT decode(encode(*, 'base64'), 'base64') AS value FROM '#' WHERE decode(encode(*, 'base64'), 'base64') > 50",
            "80"
        )
        .unwrap(),
        r#"{"value":80}"#
    );
}

// ---- Binary payloads ----

#[test]
fn binary_payloads_pass_through_encode_and_never_crash() {
    let raw: &[u8] = &[0xde, 0xad, 0xbe, 0xef, 0x00];
    let payload = Payload::parse(raw);
    let msg = message(&payload, raw);
    let eval = |sql: &str| Statement::parse(sql).unwrap().evaluate(&msg);
    let star = eval("SELECT * FROM '#'").unwrap();
    assert_eq!(&*star.to_bytes(raw), raw);
    assert_eq!(
        eval("SELECT encode(*, 'base64') AS data, timestamp() AS ts FROM '#'"),
        Some(Selected::Json(
            json!({"data": "3q2+7wA=", "ts": 1_481_825_251_155_i64})
        ))
    );
    assert_eq!(
        eval("SELECT device, upper(device) AS u FROM '#'"),
        Some(Selected::Json(json!({})))
    );
    assert_eq!(
        eval("SELECT * FROM '#' WHERE device_type = 'thermostat'"),
        None
    );
    assert_eq!(
        eval("SELECT VALUE device FROM '#'"),
        Some(Selected::Binary(Vec::new()))
    );
    assert_eq!(
        eval("SELECT *, clientid() AS c FROM '#'"),
        Some(Selected::Json(json!({"c": "sensor-7"})))
    );
}

// ---- Operators ----

#[test]
fn logical_operators_accept_booleans_and_boolean_strings() {
    assert_evals(&[
        ("true AND true", json!(true)),
        ("true AND 'FALSE'", json!(false)),
        ("'true' OR false", json!(true)),
        ("false OR false", json!(false)),
        ("NOT 'false'", json!(true)),
        ("NOT true", json!(false)),
    ]);
    assert_undefined(&["true AND 1", "NOT 'yes'", "missing OR true", "NOT null"]);
}

#[test]
fn comparisons_convert_both_sides_to_decimal() {
    assert_evals(&[
        ("3 > 2.5", json!(true)),
        ("'10' > 9", json!(true)),
        ("'5E-1' < 1", json!(true)),
        ("2 >= 2.0", json!(true)),
        ("-1 <= -2", json!(false)),
    ]);
    assert_undefined(&["'abc' < 1", "true > false", "[1] < 2", "missing > 1"]);
}

#[test]
fn equality_follows_the_aws_table() {
    assert_evals(&[
        ("1 = 1.0", json!(true)),
        ("'a' = 'a'", json!(true)),
        ("[1, 2] = [1, 2]", json!(true)),
        ("[1, 2] = [2, 1]", json!(false)),
        ("{'a': 1, 'b': 2} = {'b': 2, 'a': 1}", json!(true)),
        ("'5' = 5", json!(false)),
        ("null = null", json!(true)),
        ("null <> null", json!(false)),
        ("'5' <> 5", json!(true)),
        ("1 != 2", json!(true)),
    ]);
    assert_undefined(&["missing = 1", "1 <> missing"]);
}

#[test]
fn arithmetic_keeps_int_with_int_and_goes_decimal_otherwise() {
    assert_evals(&[
        ("2 + 3", json!(5)),
        ("7 / 2", json!(3)),
        ("-7 / 2", json!(-3)),
        ("7.0 / 2", json!(3)), // 7.0 is an Int in SQL 2016-03-23
        ("7.5 / 2", json!(3.75)),
        ("'7' / 2", json!(3.5)), // strings convert to Decimal
        ("'3' - 1", json!(2)),
        ("1.5 * 2", json!(3)),
        ("8 % 3", json!(2)),
        ("-8 % 3", json!(-2)),
        ("8.5 % 3", json!(2.5)),
        ("9223372036854775807 + 1", json!(9.223_372_036_854_776e18)),
        ("-(2)", json!(-2)),
        ("-'2.5'", json!(-2.5)),
    ]);
    assert_undefined(&["1 / 0", "1 % 0", "true + 1", "'a' - 1", "null * 2"]);
}

#[test]
fn plus_concatenates_when_either_side_is_a_string() {
    assert_evals(&[
        ("'a' + 1", json!("a1")),
        ("1 + '2'", json!("12")),
        ("'x' + [1, 'b']", json!(r#"x[1,"b"]"#)),
        ("'a' || 'b'", json!("ab")),
        ("1 || 'b'", json!("1b")),
        ("[1] || 2", json!([1, 2])),
    ]);
    assert_undefined(&["'a' + null", "'a' || missing"]);
}

#[test]
fn in_and_contains() {
    assert_evals(&[
        ("3 IN [1, 2, 3]", json!(true)),
        ("'x' IN ['a']", json!(false)),
        ("[1] IN [[1], 2]", json!(true)),
        ("'hello world' CONTAINS 'lo w'", json!(true)),
        ("[1, 2] CONTAINS 2", json!(true)),
    ]);
    assert_undefined(&["1 IN 1", "missing IN [1]"]);
}

#[test]
fn case_statements() {
    let sql = "SELECT CASE color
        WHEN 'green' THEN 'go'
        WHEN 'yellow' THEN 'caution'
        WHEN 'red' THEN 'stop'
        ELSE 'you are not at a stop light' END as instructions
    FROM '#'";
    assert_eq!(
        run(sql, r#"{"color":"yellow"}"#).unwrap(),
        r#"{"instructions":"caution"}"#
    );
    assert_eq!(
        run(sql, r#"{"color":"blue"}"#).unwrap(),
        r#"{"instructions":"you are not at a stop light"}"#
    );
    assert_eq!(
        run(sql, "{}").unwrap(),
        "{}",
        "Undefined operand makes CASE Undefined"
    );
    assert_evals(&[(
        "CASE WHEN 1 > 2 THEN 'a' WHEN 2 > 1 THEN 'b' END",
        json!("b"),
    )]);
    assert_undefined(&["CASE 1 WHEN 2 THEN 'x' END"]);
}

// ---- Undefined ----

#[test]
fn undefined_fields_are_left_out_and_null_is_kept() {
    assert_eq!(
        run("SELECT foo, bar, foo.x AS fx FROM '#'", r#"{"foo":null}"#).unwrap(),
        r#"{"foo":null}"#
    );
    assert_eq!(
        run(
            "SELECT {'a': missing, 'b': 1} AS o, [missing, 2] AS arr FROM '#'",
            "{}"
        )
        .unwrap(),
        r#"{"o":{"b":1},"arr":[2]}"#
    );
    assert_eq!(
        run("SELECT NULL AS n FROM '#'", "{}").unwrap(),
        r#"{"n":null}"#
    );
}

#[test]
fn functions_given_undefined_return_undefined() {
    for function in [
        "abs", "upper", "lower", "length", "md5", "sqrt", "floor", "trim", "numbytes", "chr",
        "bitnot", "sign",
    ] {
        assert_eq!(eval(&format!("{function}(missing)")), None, "{function}");
    }
    assert_eq!(eval("isUndefined(floor([1,2,3]))"), Some(json!(true)));
}

// ---- Conversions ----

#[test]
fn cast_follows_the_casting_tables() {
    assert_evals(&[
        ("cast(true as Int)", json!(1)),
        ("cast(false AS Decimal)", json!(0)),
        ("cast(2.7 AS Int)", json!(2)),
        ("cast(-2.7 AS Integer)", json!(-3)),
        ("cast('-1.2' AS Double)", json!(-1.2)),
        ("cast('5E-12' AS Decimal)", json!(5e-12)),
        ("cast(0 AS Boolean)", json!(false)),
        ("cast(0.5 AS Bool)", json!(true)),
        ("cast('TRUE' AS Boolean)", json!(true)),
        ("cast(12 AS String)", json!("12")),
        ("cast(1.5 AS varchar)", json!("1.5")),
        ("cast(false AS Text)", json!("false")),
        ("cast([1, 'a'] AS String)", json!(r#"[1,"a"]"#)),
        ("cast({'a': null} AS nvarchar)", json!(r#"{"a":null}"#)),
    ]);
    assert_undefined(&[
        "cast('abc' AS Int)",
        "cast([1] AS Int)",
        "cast(null AS String)",
        "cast('yes' AS Boolean)",
        "cast({} AS Decimal)",
    ]);
    assert_eq!(
        load_error("SELECT cast(1 AS Blob) FROM '#'").kind,
        ErrorKind::InvalidArgument
    );
}

#[test]
fn string_conversion_of_decimals_uses_scientific_notation_when_tiny() {
    assert_evals(&[
        ("cast(0.0000001 AS String)", json!("1E-7")),
        ("'' + 22.5", json!("22.5")),
        ("concat(1, 'hello')", json!("1hello")),
    ]);
}

// ---- Functions ----

#[test]
fn math_functions() {
    assert_evals(&[
        ("abs(-5)", json!(5)),
        ("abs('-5.123')", json!(5.123)),
        ("acos(0)", json!(std::f64::consts::FRAC_PI_2)),
        ("asin(0)", json!(0)),
        ("atan(0)", json!(0)),
        ("atan2(1, 0)", json!(std::f64::consts::FRAC_PI_2)),
        ("ceil(1.2)", json!(2)),
        ("ceil(-1.2)", json!(-1)),
        ("cos(0)", json!(1)),
        ("cosh(2.3)", json!(5.037_220_649_268_761)),
        ("exp(0)", json!(1)),
        ("floor(1.2)", json!(1)),
        ("floor(-1.2)", json!(-2)),
        ("ln(1)", json!(0)),
        ("log(100)", json!(2)),
        ("mod(8, 3)", json!(2)),
        ("remainder(8, 3)", json!(2)),
        ("nanvl(8, 3)", json!(8)),
        ("nanvl(missing, 3)", json!(3)),
        ("nanvl(null, 3)", json!(3)),
        ("power(2, 5)", json!(32)),
        ("round(1.2)", json!(1)),
        ("round(1.5)", json!(2)),
        ("round(-1.1)", json!(-1)),
        ("round(-1.5)", json!(-2)),
        ("sign(-7)", json!(-1)),
        ("sign(0)", json!(0)),
        ("sign(13)", json!(1)),
        ("sin(0)", json!(0)),
        ("sinh(2.3)", json!(4.936_961_805_545_957)),
        ("sqrt(9)", json!(3)),
        ("tan(3)", json!(-0.142_546_543_074_277_8)),
        ("tanh(2.3)", json!(0.980_096_396_266_191_4)),
        ("trunc(2.3, 0)", json!(2)),
        ("trunc(2.3123, 2)", json!(2.31)),
        ("trunc(2.888, 2)", json!(2.88)),
        ("trunc(0.29, 2)", json!(0.29)),
        ("trunc(2.00, 5)", json!(2)),
    ]);
    assert_undefined(&["sqrt(-1)", "ln(0)", "abs(true)", "acos(2)", "floor('x')"]);
    let random = eval("rand()").unwrap().as_f64().unwrap();
    assert!((0.0..1.0).contains(&random));
}

#[test]
fn bit_functions() {
    assert_evals(&[
        ("bitand(13, 5)", json!(5)),
        ("bitor(8, 5)", json!(13)),
        ("bitxor(13, 5)", json!(8)),
        ("bitnot(13)", json!(-14)),
        ("bitand('13.9', 5.2)", json!(5)),
    ]);
    assert_undefined(&["bitand('x', 1)", "bitnot(null)"]);
}

#[test]
fn string_functions() {
    assert_evals(&[
        ("chr(65)", json!("A")),
        ("chr(49)", json!("1")),
        ("concat(1)", json!(1)),
        ("concat([1, 2, 3], 4)", json!([1, 2, 3, 4])),
        ("concat([1, 2, 3], 'hello')", json!([1, 2, 3, "hello"])),
        ("concat('con', 'cat')", json!("concat")),
        ("concat('he','is','man')", json!("heisman")),
        (
            "concat([1, 2, 3], 'hello', [4, 5, 6])",
            json!([1, 2, 3, "hello", 4, 5, 6]),
        ),
        ("endswith('cat','at')", json!(true)),
        ("startswith('ranger','ran')", json!(true)),
        ("indexof('abcd', 'bc')", json!(1)),
        ("indexof('abcd', 'x')", json!(-1)),
        ("length('hi')", json!(2)),
        ("length(false)", json!(5)),
        ("lower('HELLO')", json!("hello")),
        ("lower(['HELLO'])", json!(r#"["hello"]"#)),
        ("upper('hello')", json!("HELLO")),
        ("upper(['hello'])", json!(r#"["HELLO"]"#)),
        ("lpad('hello', 2)", json!("  hello")),
        ("lpad(1, 3)", json!("   1")),
        ("rpad('hello', 2)", json!("hello  ")),
        ("rpad(1, 3)", json!("1   ")),
        ("lpad('x', -4)", json!("x")),
        ("Ltrim(' h i ')", json!("h i ")),
        ("rtrim(' h i ')", json!(" h i")),
        ("Trim(' hi ')", json!("hi")),
        ("numbytes('hi')", json!(2)),
        ("numbytes('€')", json!(3)),
        ("replace('abcd', 'bc', 'x')", json!("axd")),
        ("replace('abcdabcd', 'b', 'x')", json!("axcdaxcd")),
        ("substring('012345', 0)", json!("012345")),
        ("substring('012345', 2)", json!("2345")),
        ("substring('012345', 2.745)", json!("2345")),
        ("substring(123, 2)", json!("3")),
        ("substring('012345', -1)", json!("012345")),
        ("substring(true, 1.2)", json!("rue")),
        ("substring(false, -2.411E247)", json!("false")),
        ("substring('012345', 1, 3)", json!("12")),
        ("substring('012345', -50, 50)", json!("012345")),
        ("substring('012345', 3, 1)", json!("")),
    ]);
    assert_undefined(&[
        "chr(200)",
        "endswith(null, 'a')",
        "startswith('a', missing)",
    ]);
}

#[test]
fn concat_with_no_arguments_is_undefined() {
    assert_eq!(eval("concat()"), None);
}

#[test]
fn regexp_functions() {
    assert_evals(&[
        ("regexp_matches('aaaa', 'a{2,}')", json!(true)),
        ("regexp_matches('aaaa', 'b')", json!(false)),
        ("regexp_replace('abcd', 'bc', 'x')", json!("axd")),
        ("regexp_replace('abcd', 'b(.*)d', '$1')", json!("ac")),
        ("regexp_substr('hihihello', 'hi')", json!("hi")),
        ("regexp_substr('hihihello', '(hi)*')", json!("hihi")),
        ("regexp_matches(12345, '\\d+')", json!(true)),
    ]);
    assert_eq!(eval_with("regexp_matches('abc', p)", r#"{"p":"(("}"#), None);
    assert_eq!(
        load_error("SELECT regexp_matches(a, '((') FROM '#'").kind,
        ErrorKind::InvalidArgument
    );
}

#[test]
fn hash_functions() {
    assert_evals(&[
        ("md2('hello')", json!("a9046c73e00331af68917d3804f70655")),
        ("md5('hello')", json!("5d41402abc4b2a76b9719d911017c592")),
        (
            "sha1('hello')",
            json!("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"),
        ),
        (
            "sha224('hello')",
            json!("ea09ae9cc6768c50fcee903ed054556e5bfc8347907f12598aa24193"),
        ),
        (
            "sha256('hello')",
            json!("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"),
        ),
        (
            "sha384('')",
            json!(
                "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b"
            ),
        ),
        (
            "sha512('')",
            json!(
                "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
            ),
        ),
        ("md5(1)", json!("c4ca4238a0b923820dcc509a6f75849b")),
    ]);
    let payload = r#"{"deviceid":"iot123","temp":54.98}"#;
    assert_eq!(
        run("SELECT temp, md5(deviceid) AS hashed_id FROM '#'", payload).unwrap(),
        r#"{"temp":54.98,"hashed_id":"e37f81fb397e595c4aeb5645b8cbbbd1"}"#
    );
}

#[test]
fn encode_and_decode() {
    let payload = r#"{"encoded_temp":"eyAidGVtcGVyYXR1cmUiOiAzMyB9Cg=="}"#;
    assert_eq!(
        run(
            "SELECT decode(encoded_temp,\"base64\").temperature AS temp from '#'",
            payload
        )
        .unwrap(),
        r#"{"temp":33}"#
    );
    assert_evals(&[
        ("encode('hello', 'base64')", json!("aGVsbG8=")),
        ("decode('aGVsbG8=', 'base64')", json!("hello")),
        ("decode('!!', 'base64')", Value::Null),
    ]);
    assert_eq!(
        load_error("SELECT encode(a, 'hex') FROM '#'").kind,
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        load_error("SELECT decode(a, 'proto', 'b', 'k', 'f', 'm') FROM '#'").kind,
        ErrorKind::InvalidArgument
    );
}

#[test]
fn type_tests_and_get() {
    assert_evals(&[
        ("isNull(5)", json!(false)),
        ("isNull(Null)", json!(true)),
        ("isNull(missing)", json!(false)),
        ("isUndefined(5)", json!(false)),
        ("isUndefined(missing)", json!(true)),
        ("get(['a', 'b', 'c'], 1)", json!("b")),
        ("get({'a':'b'}, 'a')", json!("b")),
        ("get('abc', 1)", json!("b")),
        ("get(['a'], '0')", json!("a")),
        ("get_or_default(missing, 'd')", json!("d")),
        ("get_or_default(1, 'd')", json!(1)),
    ]);
    assert_undefined(&[
        "get(['a'], 3)",
        "get(['a'], -1)",
        "get(5, 0)",
        "get({'a': 1}, 1)",
    ]);
    let payload = r#"{"mydata":{"item2":{"0":{"my-key":"myValue"}}}}"#;
    assert!(
        run(
            r#"SELECT * from '#' WHERE get(get(get(mydata,"item2"),"0"),"my-key") = "myValue""#,
            payload
        )
        .is_some()
    );
}

#[test]
fn message_functions() {
    assert_evals(&[
        ("topic()", json!(TOPIC)),
        ("topic(1)", json!("things")),
        ("topic(3)", json!("thingOne")),
        ("clientid()", json!("sensor-7")),
        ("timestamp()", json!(1_481_825_251_155_i64)),
        ("sql_version()", json!("2016-03-23")),
    ]);
    assert_undefined(&["topic(0)", "topic(4)", "get_mqtt_property('content_type')"]);
    let uuid = eval("newuuid()").unwrap();
    let uuid = uuid.as_str().unwrap();
    assert_eq!(uuid.len(), 36);
    assert_ne!(eval("newuuid()").unwrap(), eval("newuuid()").unwrap());
}

#[test]
fn clientid_without_mqtt_is_n_a() {
    let payload = Payload::parse(b"{}");
    let msg = MessageContext::new("a", &payload, b"{}");
    let selected = Statement::parse("SELECT clientid() AS c FROM 'a'")
        .unwrap()
        .evaluate(&msg);
    assert_eq!(selected, Some(Selected::Json(json!({"c": "n/a"}))));
}

#[test]
fn mqtt5_properties() {
    let properties = MqttProperties {
        content_type: Some("application/json".into()),
        format_indicator: Some(1),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(vec![1, 2, 3]),
        user_properties: vec![
            ("site".into(), "north".into()),
            ("tag".into(), "a".into()),
            ("tag".into(), "b".into()),
        ],
    };
    let payload = Payload::parse(b"{}");
    let msg = MessageContext {
        mqtt: &properties,
        ..MessageContext::new("a", &payload, b"{}")
    };
    let sql = "SELECT get_mqtt_property('content_type') AS ct, get_mqtt_property('format_indicator') AS fi,
        get_mqtt_property('response_topic') AS rt, get_mqtt_property('correlation_data') AS cd,
        get_user_properties('tag') AS tags, get_user_properties('none') AS none,
        get_user_properties() AS all FROM 'a'";
    assert_eq!(
        Statement::parse(sql).unwrap().evaluate(&msg),
        Some(Selected::Json(json!({
            "ct": "application/json",
            "fi": "UTF8_DATA",
            "rt": "reply/here",
            "cd": "AQID",
            "tags": ["a", "b"],
            "all": [{"site": "north"}, {"tag": "a"}, {"tag": "b"}],
        })))
    );
    assert_eq!(
        load_error("SELECT get_mqtt_property('colour') FROM 'a'").kind,
        ErrorKind::InvalidArgument
    );
}

#[test]
fn time_functions() {
    assert_evals(&[
        (
            "parse_time(\"yyyy.MM.dd G 'at' HH:mm:ss z\", 100000000, 'America/Belize')",
            json!("1970.01.01 AD at 21:46:40 CST"),
        ),
        ("parse_time('yyyy', 1481825251155)", json!("2016")),
        (
            "time_to_epoch('2020-04-03 09:45:18 UTC+01:00', 'yyyy-MM-dd HH:mm:ss VV')",
            json!(1_585_903_518_000_i64),
        ),
        (
            "time_to_epoch('18 December 2015', 'dd MMMM yyyy')",
            json!(1_450_396_800_000_i64),
        ),
        (
            "time_to_epoch('2007-12-03 10:15:30.592 America/Los_Angeles', 'yyyy-MM-dd HH:mm:ss.SSS z')",
            json!(1_196_705_730_592_i64),
        ),
    ]);
    assert_undefined(&[
        "time_to_epoch('garbage', 'yyyy')",
        "parse_time('yyyy', 'x')",
    ]);
    assert_eq!(
        load_error("SELECT parse_time('yyyy', 1, 'Mars/Olympus') FROM '#'").kind,
        ErrorKind::InvalidArgument
    );
}

// ---- Load-time errors ----

#[test]
fn aws_service_functions_are_rejected_at_load() {
    for call in [
        "get_dynamodb('t', 'k', 'v', 's', 'sv', 'arn')",
        "machinelearning_predict('m', 'arn', *)",
        "get_secret('id', 'SecretString', 'k', 'arn')",
        "aws_lambda('arn', {})",
        "get_thing_shadow('thing', 'shadow', 'arn')",
        "get_registry_data('thing', 'arn')",
        "principal()",
        "accountid()",
    ] {
        let error = load_error(&format!("SELECT {call} AS x FROM 'a/b'"));
        assert_eq!(error.kind, ErrorKind::NotAvailableAtEdge, "{call}");
        assert!(
            error.to_string().contains("not available at the edge"),
            "{error}"
        );
    }
}

#[test]
fn wrong_calls_fail_at_load_with_position() {
    let error = load_error("SELECT upper(a, b)\nFROM 'a'");
    assert_eq!(error.kind, ErrorKind::Arity);
    assert_eq!(
        error.to_string(),
        "line 1, column 8: `upper` takes 1 argument, not 2 near `upper(a, b)`"
    );
    let error = load_error("SELECT frobnicate(a) FROM 'a'");
    assert_eq!(error.kind, ErrorKind::UnknownFunction);
    assert_eq!(error.near, "frobnicate");
}

#[test]
fn parse_errors_point_at_line_column_and_text() {
    let error = load_error("SELECT a,\n  b +\n  FROM 'x'");
    assert_eq!(error.kind, ErrorKind::Syntax);
    assert_eq!((error.line, error.column), (3, 3));
    assert_eq!(error.near, "FROM");
    let error = load_error("SELECT * FROM topic/x");
    assert!(
        error.to_string().contains("topic filter in quotes"),
        "{error}"
    );
    let error = load_error("SELECT * FROM 'a/#/b'");
    assert_eq!((error.kind, error.column), (ErrorKind::TopicFilter, 15));
    assert_eq!(load_error("SELECT * FROM 'a' junk").near, "junk");
    assert_eq!(load_error("SELECT 'abc FROM 'a'").kind, ErrorKind::Syntax);
}

#[test]
fn keywords_and_function_names_are_case_insensitive() {
    assert_eq!(
        run(
            "select Upper(color) as c from '#' WHERE color = 'x' Or FALSE",
            r#"{"color":"x"}"#
        )
        .unwrap(),
        r#"{"c":"X"}"#
    );
}

// ---- Substitution templates ----

fn render(template: &str, payload: &str) -> String {
    let parsed = Payload::parse(payload.as_bytes());
    Template::compile(template)
        .unwrap_or_else(|e| panic!("{template}: {e}"))
        .render(&message(&parsed, payload.as_bytes()))
}

#[test]
fn templates_substitute_against_the_incoming_message() {
    assert_eq!(
        render("device/${topic(2)}/devicePayload/${timestamp()}", "{}"),
        "device/myThings/devicePayload/1481825251155"
    );
    assert_eq!(
        render("${topic()}/republish", "{}"),
        "things/myThings/thingOne/republish"
    );
    assert_eq!(
        render(
            "${deviceid}: ${temp * 2} ${coords} ${missing}|",
            r#"{"deviceid":"iot123","temp":1.5,"coords":{"a":1}}"#
        ),
        r#"iot123: 3 {"a":1} |"#
    );
    assert_eq!(
        render("${parse_time('yyyy', timestamp(), 'UTC')}", "{}"),
        "2016"
    );
    assert_eq!(render("plain $ text {}", "{}"), "plain $ text {}");
    assert_eq!(render("${ {'a': 1}.a }", "{}"), "1");
    assert_eq!(render("${device_id}", "\u{1}binary"), "");
}

#[test]
fn templates_write_topic_levels_as_the_evaluated_call_returns_them() {
    // `topic(n + 0)` is not a literal level, so it is evaluated like any expression.
    for level in 0..=4 {
        assert_eq!(
            render(&format!("<${{topic({level})}}>"), "{}"),
            render(&format!("<${{topic({level} + 0)}}>"), "{}"),
            "topic({level})"
        );
    }
    assert_eq!(render("<${topic(2)}>", "{}"), "<myThings>");
    assert_eq!(render("<${topic(4)}>", "{}"), "<>");
    assert_eq!(
        render("<${topic()}>", "{}"),
        render("<${topic() || ''}>", "{}")
    );
}

#[test]
fn templates_reject_bad_expressions_at_compile_time() {
    let error = Template::compile("a/${upper(}").unwrap_err();
    assert_eq!(error.column, 11);
    assert!(Template::compile("a/${topic(2)").is_err());
    assert!(Template::compile("${}").is_err());
    assert_eq!(
        Template::compile("${get_secret('a','b','c','d')}")
            .unwrap_err()
            .kind,
        ErrorKind::NotAvailableAtEdge
    );
    assert!(Template::compile("no substitutions").unwrap().is_constant());
}

#[test]
fn compiled_statements_and_templates_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Statement>();
    shareable::<Template>();
    shareable::<rulegate_sql::TopicIndex<Statement>>();
    shareable::<Payload>();
}
