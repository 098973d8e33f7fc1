-- Carts left without an order: the open items of include/sql/intermediate/cart_items.sql
-- (added in the last carts.lookback_days, not removed, not bought since), the last add
-- at least carts.abandon_after_hours ago (per category: carts.categories; a cart waits
-- for its slowest category). Step 2 once carts.follow_up_hours more have passed. The
-- catch-up offer depends on the cart value (price x quantity) against the free-delivery
-- break-even threshold.
{%- set waits = {} %}
{%- for name, c in settings.carts.categories.items() if c.abandon_after_hours is not none %}
{%- set _ = waits.update({name: c.abandon_after_hours}) %}
{%- endfor %}
WITH open_items AS (
    SELECT *,
           {%- if waits %}
           CASE category
           {%- for name, hours in waits.items() %}
               WHEN {{ lit(name) }} THEN {{ hours }}
           {%- endfor %}
               ELSE {{ settings.carts.abandon_after_hours }} END
           {%- else %}
           {{ settings.carts.abandon_after_hours }}
           {%- endif %} AS abandon_after_hours
    FROM {{ mart('cart_items') }}
    WHERE is_open
), carts AS (
    SELECT cart_key,
           MAX(customer_id) AS customer_id,
           MAX(visitor_id) AS visitor_id,
           COUNT(*) AS items,
           SUM(quantity) AS quantity,
           string_agg(product_id, ',' ORDER BY product_id) AS product_ids,
           string_agg(DISTINCT category, ',' ORDER BY category) AS categories,
           SUM(COALESCE(value, 0) * quantity) AS cart_value,
           MAX(abandon_after_hours) AS abandon_after_hours,
           MIN(added_at) AS first_added_at,
           MAX(added_at) AS last_added_at
    FROM open_items
    GROUP BY cart_key
)
SELECT cart_key,
       customer_id,
       visitor_id,
       CAST(items AS BIGINT) AS items,
       CAST(quantity AS BIGINT) AS quantity,
       product_ids,
       categories,
       CAST(cart_value AS NUMERIC(18, 2)) AS cart_value,
       first_added_at,
       last_added_at,
       CAST(hours_since_last_add AS DOUBLE PRECISION) AS hours_since_last_add,
       CAST(abandon_after_hours AS DOUBLE PRECISION) AS abandon_after_hours,
       CAST({% if settings.carts.follow_up_hours is not none -%}
            CASE WHEN hours_since_last_add >= abandon_after_hours + {{ settings.carts.follow_up_hours }} THEN 2 ELSE 1 END
            {%- else %}1{% endif %} AS BIGINT) AS step,
       CASE WHEN cart_value >= {{ settings.carts.free_delivery_threshold }} THEN 'reminder'
            ELSE 'free_delivery_topup' END AS offer,
       CAST(GREATEST(0, {{ settings.carts.free_delivery_threshold }} - cart_value) AS NUMERIC(18, 2)) AS amount_to_free_delivery
FROM (SELECT *, {{ hours_between(now, 'last_added_at') }} AS hours_since_last_add FROM carts) c
WHERE hours_since_last_add >= abandon_after_hours
