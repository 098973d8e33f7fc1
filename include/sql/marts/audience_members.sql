-- Every configured audience, materialized: the members its rule selects, with consent
-- applied per channel (email: email consent, not unsubscribed, not archived; sms:
-- sms consent, not unsubscribed; ads: ads consent; call: a phone), at least one of the
-- required identifiers, and a stable holdout flag: a hash of audience and member, so a
-- customer stays in (or out of) the control group across runs. Every member carries what
-- a message or a caller needs about the customer (customer_segments, customer_facts),
-- whatever the audience's source, and the source's own columns where it has them (the
-- cart, its step; the trigger's occasion). One row per audience and member: where a
-- source has several rows for one member (an audience on two triggers), the soonest
-- occasion wins.
{%- set SOURCE_COLUMNS = {'visitor_id': 'VARCHAR', 'offer': 'VARCHAR', 'cart_value': 'NUMERIC(18, 2)',
                          'amount_to_free_delivery': 'NUMERIC(18, 2)', 'product_ids': 'VARCHAR', 'step': 'INTEGER',
                          'trigger': 'VARCHAR', 'occasion_on': 'DATE', 'milestone': 'BIGINT', 'years': 'BIGINT',
                          'category': 'VARCHAR'} %}
{%- macro test(column, kind, test) -%}
  {%- set value = 'CAST(m.' ~ column ~ ' AS DATE)' if kind in ('date', 'timestamp') else 'm.' ~ column -%}
  {%- if test is not mapping and test.given is not defined %} AND m.{{ column }} IN ({{ test | map('lit') | join(', ') }})
  {%- else %}
    {%- if test['values'] is not none %} AND m.{{ column }} IN ({{ test['values'] | map('lit') | join(', ') }}){% endif %}
    {%- if test['min'] is not none %} AND m.{{ column }} >= {{ test['min'] }}{% endif %}
    {%- if test['max'] is not none %} AND m.{{ column }} <= {{ test['max'] }}{% endif %}
    {%- if test['within_days'] is not none %} AND {{ value }} BETWEEN {{ as_of }} - {{ test['within_days'] }} AND {{ as_of }} + {{ test['within_days'] }}{% endif %}
    {%- if test['older_than_days'] is not none %} AND {{ value }} < {{ as_of }} - {{ test['older_than_days'] }}{% endif %}
  {%- endif %}
{%- endmacro %}
WITH people AS (
    SELECT c.customer_id, c.email, c.phone, c.first_name,
           COALESCE(c.email_consent, FALSE) AS email_consent,
           COALESCE(c.sms_consent, FALSE) AS sms_consent,
           COALESCE(c.ads_consent, FALSE) AS ads_consent,
           c.unsubscribed_at IS NOT NULL OR f.mailing_unsubscribed_at IS NOT NULL AS unsubscribed,
           s.lifecycle_stage, s.value_tier, s.winback_offer, s.main_category, s.days_since_last_order,
           s.last_feedback_score, s.last_order_status, s.last_reason, s.predicted_clv_365d,
           s.loyalty_tier, s.next_loyalty_tier, s.amount_to_next_tier, f.late_deliveries
    FROM {{ src('customers') }} c
    LEFT JOIN {{ mart('customer_facts') }} f ON f.customer_id = c.customer_id
    LEFT JOIN {{ mart('customer_segments') }} s ON s.customer_id = c.customer_id
), candidates AS (
{%- for name, audience in audiences.items() %}
    {{ 'UNION ALL' if not loop.first }}
    SELECT CAST({{ lit(name) }} AS VARCHAR) AS audience,
           CAST({{ lit(audience.channel) }} AS VARCHAR) AS channel,
           CAST({{ audience.holdout }} AS DOUBLE PRECISION) AS holdout_share,
           m.customer_id
           {%- for column, type in SOURCE_COLUMNS.items() %},
           {{ 'm.' ~ column if column in audience.columns else 'CAST(NULL AS ' ~ type ~ ')' }} AS {{ column }}
           {%- endfor %}
    FROM {{ mart(audience.source) }} m
    WHERE TRUE
    {%- for column, condition in audience.where.items() %}{{ test(column, audience.columns[column], condition) }}{% endfor %}
{%- else %}
    SELECT CAST(NULL AS VARCHAR) AS audience, CAST(NULL AS VARCHAR) AS channel, CAST(0 AS DOUBLE PRECISION) AS holdout_share,
           CAST(NULL AS VARCHAR) AS customer_id
           {%- for column, type in SOURCE_COLUMNS.items() %}, CAST(NULL AS {{ type }}) AS {{ column }}{% endfor %}
    WHERE 1 = 0
{%- endfor %}
), checked AS (
    SELECT a.*, p.email, p.phone, p.first_name, p.lifecycle_stage, p.value_tier, p.winback_offer, p.main_category,
           p.days_since_last_order, p.last_feedback_score, p.last_order_status, p.last_reason, p.predicted_clv_365d,
           p.loyalty_tier, p.next_loyalty_tier, p.amount_to_next_tier, p.late_deliveries,
           CASE a.channel
               WHEN 'email' THEN COALESCE(p.email_consent AND NOT p.unsubscribed AND p.lifecycle_stage IS DISTINCT FROM 'archived', FALSE)
               WHEN 'sms' THEN COALESCE(p.sms_consent AND NOT p.unsubscribed, FALSE)
               WHEN 'ads' THEN COALESCE(p.ads_consent, FALSE)
               ELSE TRUE
           END AS consented
    FROM candidates a
    LEFT JOIN people p ON p.customer_id = a.customer_id
), ranked AS (
    SELECT c.*, COALESCE(customer_id, 'v:' || visitor_id) AS member_key,
           ROW_NUMBER() OVER (PARTITION BY audience, COALESCE(customer_id, 'v:' || visitor_id)
                              ORDER BY occasion_on, trigger, milestone, category, product_ids) AS nth
    FROM checked c
)
SELECT audience, channel, member_key,
       customer_id, visitor_id, email, phone, first_name, lifecycle_stage, value_tier,
       offer, cart_value, product_ids, winback_offer, amount_to_free_delivery, main_category,
       days_since_last_order, last_feedback_score, last_order_status, last_reason, predicted_clv_365d,
       step, trigger, CAST(occasion_on AS VARCHAR) AS occasion_on, milestone, years, category,
       loyalty_tier, next_loyalty_tier, amount_to_next_tier, late_deliveries,
       {{ hash_bucket("audience || ':' || member_key") }} < holdout_share * 4294967296 AS in_holdout
FROM ranked
WHERE consented AND nth = 1
  AND (FALSE
{%- for name, audience in audiences.items() %}
       OR (audience = {{ lit(name) }} AND ({{ audience.identifiers | map('present') | join(' OR ') }}))
{%- endfor %}
  )
