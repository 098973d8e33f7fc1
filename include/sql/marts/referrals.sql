-- One row per referred customer: who brought them (segments.referrals). A customer's
-- first purchase carrying a promo code `<promo_prefix><referrer's customer_id>`, or a
-- visit with utm_source in utm_sources and the referrer's customer_id as utm_campaign
-- at or before that purchase, links them to the referrer (the code first, then the
-- latest such visit). Self-referrals are dropped.
{%- set r = settings.referrals %}
WITH first_purchases AS (
    SELECT order_id, customer_id, created_at, promo_code FROM (
        SELECT order_id, customer_id, created_at, promo_code,
               ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY created_at, order_id) AS nth
        FROM {{ src('orders') }} orders
        WHERE status IN {{ purchase_statuses }}
    ) ranked
    WHERE nth = 1
), by_code AS (
{%- if r.promo_prefix %}
    SELECT customer_id, substr(promo_code, {{ r.promo_prefix | length + 1 }}) AS referrer_id, 'promo_code' AS via
    FROM first_purchases
    WHERE lower(substr(promo_code, 1, {{ r.promo_prefix | length }})) = {{ lit(r.promo_prefix | lower) }}
      AND length(promo_code) > {{ r.promo_prefix | length }}
{%- else %}
    SELECT CAST(NULL AS VARCHAR) AS customer_id, CAST(NULL AS VARCHAR) AS referrer_id, 'promo_code' AS via WHERE 1 = 0
{%- endif %}
), by_visit AS (
{%- if r.utm_sources %}
    SELECT p.customer_id, {{ latest('e.utm_campaign', 'e.occurred_at', 'e.event_id') }} AS referrer_id, 'utm' AS via
    FROM first_purchases p
    JOIN (
        SELECT COALESCE(e.customer_id, m.customer_id) AS customer_id, e.utm_campaign, e.occurred_at, e.event_id
        FROM {{ src('events') }} e
        LEFT JOIN {{ mart('identity_map') }} m ON m.visitor_id = e.visitor_id
        WHERE e.utm_source IN ({{ r.utm_sources | map('lit') | join(', ') }}) AND e.utm_campaign IS NOT NULL
    ) e ON e.customer_id = p.customer_id AND e.occurred_at <= p.created_at
    GROUP BY p.customer_id
{%- else %}
    SELECT CAST(NULL AS VARCHAR) AS customer_id, CAST(NULL AS VARCHAR) AS referrer_id, 'utm' AS via WHERE 1 = 0
{%- endif %}
), linked AS (
    SELECT p.customer_id, p.order_id, p.created_at,
           COALESCE(c.referrer_id, v.referrer_id) AS referrer_id,
           CASE WHEN c.referrer_id IS NOT NULL THEN c.via ELSE v.via END AS via
    FROM first_purchases p
    LEFT JOIN by_code c ON c.customer_id = p.customer_id
    LEFT JOIN by_visit v ON v.customer_id = p.customer_id
)
SELECT l.referrer_id, l.customer_id AS referred_id, l.order_id AS first_order_id, l.created_at AS first_order_at,
       CAST(l.via AS VARCHAR) AS via,
       EXISTS (SELECT 1 FROM {{ mart('customer_facts') }} f WHERE f.customer_id = l.referrer_id) AS referrer_is_customer
FROM linked l
WHERE l.referrer_id IS NOT NULL AND l.referrer_id <> l.customer_id
