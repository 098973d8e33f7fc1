-- Every configured audience, materialized: the members its rule selects, with consent
-- applied per channel (email: email consent, not unsubscribed, not archived; sms:
-- sms consent, not unsubscribed; ads: ads consent; call: a phone), at least one of the
-- required identifiers, and a stable holdout flag: a hash of audience and member, so a
-- customer stays in (or out of) the control group across runs. Every member carries the
-- customer's winback_offer (customer_segments), whatever the audience's source.
WITH people AS (
    SELECT c.customer_id, c.email, c.phone, c.first_name,
           COALESCE(c.email_consent, FALSE) AS email_consent,
           COALESCE(c.sms_consent, FALSE) AS sms_consent,
           COALESCE(c.ads_consent, FALSE) AS ads_consent,
           c.unsubscribed_at IS NOT NULL OR f.mailing_unsubscribed_at IS NOT NULL AS unsubscribed,
           s.lifecycle_stage, s.value_tier, s.winback_offer
    FROM {{ src('customers') }} c
    LEFT JOIN {{ mart('customer_facts') }} f ON f.customer_id = c.customer_id
    LEFT JOIN {{ mart('customer_segments') }} s ON s.customer_id = c.customer_id
), candidates AS (
{%- for name, audience in audiences.items() %}
    {{ 'UNION ALL' if not loop.first }}
    SELECT CAST({{ lit(name) }} AS VARCHAR) AS audience,
           CAST({{ lit(audience.channel) }} AS VARCHAR) AS channel,
           CAST({{ audience.holdout }} AS DOUBLE PRECISION) AS holdout_share,
           {%- if audience.source == 'customer_segments' %}
           m.customer_id, CAST(NULL AS VARCHAR) AS visitor_id,
           CAST(NULL AS VARCHAR) AS offer, CAST(NULL AS NUMERIC(18, 2)) AS cart_value, CAST(NULL AS VARCHAR) AS product_ids
           {%- elif audience.source == 'abandoned_carts' %}
           m.customer_id, m.visitor_id, m.offer, m.cart_value, m.product_ids
           {%- elif audience.source == 'browse_abandoners' %}
           m.customer_id, m.visitor_id, CAST(NULL AS VARCHAR) AS offer, CAST(NULL AS NUMERIC(18, 2)) AS cart_value, m.product_ids
           {%- elif audience.source == 'registered_not_bought' %}
           m.customer_id, CAST(NULL AS VARCHAR) AS visitor_id, CAST(NULL AS VARCHAR) AS offer,
           CAST(NULL AS NUMERIC(18, 2)) AS cart_value, m.product_ids
           {%- else %}
           m.customer_id, CAST(NULL AS VARCHAR) AS visitor_id, CAST(NULL AS VARCHAR) AS offer,
           CAST(NULL AS NUMERIC(18, 2)) AS cart_value, CAST(NULL AS VARCHAR) AS product_ids
           {%- endif %}
    FROM {{ mart(audience.source) }} m
    WHERE TRUE
    {%- for column, test in audience.where.items() %}
      {%- if test is mapping or test.min is defined %}
      {%- if test['min'] is not none %} AND m.{{ column }} >= {{ test['min'] }}{% endif %}
      {%- if test['max'] is not none %} AND m.{{ column }} <= {{ test['max'] }}{% endif %}
      {%- if test['values'] is not none %} AND m.{{ column }} IN ({{ test['values'] | map('lit') | join(', ') }}){% endif %}
      {%- else %} AND m.{{ column }} IN ({{ test | map('lit') | join(', ') }})
      {%- endif %}
    {%- endfor %}
{%- else %}
    SELECT CAST(NULL AS VARCHAR) AS audience, CAST(NULL AS VARCHAR) AS channel, CAST(0 AS DOUBLE PRECISION) AS holdout_share,
           CAST(NULL AS VARCHAR) AS customer_id, CAST(NULL AS VARCHAR) AS visitor_id, CAST(NULL AS VARCHAR) AS offer,
           CAST(NULL AS NUMERIC(18, 2)) AS cart_value, CAST(NULL AS VARCHAR) AS product_ids
    WHERE 1 = 0
{%- endfor %}
), checked AS (
    SELECT a.*, p.email, p.phone, p.first_name, p.lifecycle_stage, p.value_tier, p.winback_offer,
           CASE a.channel
               WHEN 'email' THEN COALESCE(p.email_consent AND NOT p.unsubscribed AND p.lifecycle_stage IS DISTINCT FROM 'archived', FALSE)
               WHEN 'sms' THEN COALESCE(p.sms_consent AND NOT p.unsubscribed, FALSE)
               WHEN 'ads' THEN COALESCE(p.ads_consent, FALSE)
               ELSE TRUE
           END AS consented
    FROM candidates a
    LEFT JOIN people p ON p.customer_id = a.customer_id
)
SELECT audience, channel,
       COALESCE(customer_id, 'v:' || visitor_id) AS member_key,
       customer_id, visitor_id, email, phone, first_name, lifecycle_stage, value_tier,
       offer, cart_value, product_ids, winback_offer,
       {{ hash_bucket("audience || ':' || COALESCE(customer_id, 'v:' || visitor_id)") }} < holdout_share * 4294967296 AS in_holdout
FROM checked
WHERE consented
  AND (FALSE
{%- for name, audience in audiences.items() %}
       OR (audience = {{ lit(name) }} AND ({{ audience.identifiers | map('present') | join(' OR ') }}))
{%- endfor %}
  )
