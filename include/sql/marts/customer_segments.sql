-- The lifecycle stage of every customer with an order, the churn threshold behind it,
-- and the model scores. Thresholds come, in this order, from the customer's own rhythm
-- (enough repeat gaps), their main category's cycle, or the shop-wide cycle.
-- Stage precedence (first match wins): archived, negative, newcomer, one_off, lapsed,
-- at_risk, loyal, regular. A lapsed or at-risk customer's winback_offer follows the last
-- reason they gave for leaving (contact_outcomes) through segments.winback_offers,
-- except that a discount-driven customer gets no discount (segments.discounts). Loyalty
-- tiers follow the cumulative purchase revenue (segments.loyalty).
-- Negative: no purchase, a low score (the lowest of the last feedback's scores), a
-- cancelled or returned last order, a complaint, or (lifecycle.late_delivery_is_negative)
-- a late delivery, inside lifecycle.negative_window_days.
WITH facts AS (
    SELECT f.*,
           {{ as_of }} - f.last_purchase_day AS days_since_last_order,
           f.purchase_days - 1 AS x,
           f.last_purchase_day - f.first_purchase_day AS t_x,
           {{ as_of }} - f.first_purchase_day AS big_t
    FROM {{ mart('customer_facts') }} f
), thresholds AS (
    SELECT f.customer_id,
           CASE WHEN f.purchase_days - 1 >= {{ settings.churn.own_rhythm_min_gaps }} THEN 'own'
                WHEN c.basis IN ('data', 'config') THEN 'category'
                ELSE s.basis END AS churn_basis,
           CASE WHEN f.purchase_days - 1 >= {{ settings.churn.own_rhythm_min_gaps }} THEN f.median_gap_days
                WHEN c.basis IN ('data', 'config') THEN c.typical_gap_days
                ELSE s.typical_gap_days END AS typical_gap_days,
           CASE WHEN f.purchase_days - 1 >= {{ settings.churn.own_rhythm_min_gaps }}
                THEN GREATEST({{ settings.churn.min_threshold_days }}, f.median_gap_days * {{ settings.churn.own_at_risk_factor }})
                WHEN c.basis IN ('data', 'config') THEN c.at_risk_days
                ELSE s.at_risk_days END AS at_risk_days,
           CASE WHEN f.purchase_days - 1 >= {{ settings.churn.own_rhythm_min_gaps }}
                THEN GREATEST({{ settings.churn.min_threshold_days }}, f.median_gap_days * {{ settings.churn.own_churn_factor }})
                WHEN c.basis IN ('data', 'config') THEN c.churn_days
                ELSE s.churn_days END AS churn_days
    FROM facts f
    LEFT JOIN {{ mart('category_cycles') }} c ON c.category = f.main_category AND c.category <> '*'
    CROSS JOIN (SELECT * FROM {{ mart('category_cycles') }} WHERE category = '*') s
), signals AS (
    SELECT f.customer_id,
           f.purchase_days > 0 AND f.days_since_last_order > t.churn_days AS is_churned,
           f.purchase_days = 0
             OR (f.last_feedback_lowest_score <= {{ settings.lifecycle.negative_max_score }} AND f.last_feedback_at >= {{ negative_since }})
             {%- if settings.lifecycle.late_delivery_is_negative %}
             OR f.last_late_delivery_at >= {{ negative_since }}
             {%- endif %}
             OR (f.last_order_status IN ('cancelled', 'returned') AND f.last_any_order_at >= {{ negative_since }})
             OR f.last_complaint_at >= {{ negative_since }} AS is_negative,
           COALESCE(GREATEST(COALESCE(f.last_visit_at, f.last_engaged_at), COALESCE(f.last_engaged_at, f.last_visit_at))
                    > f.last_order_at
                    AND GREATEST(COALESCE(f.last_visit_at, f.last_engaged_at), COALESCE(f.last_engaged_at, f.last_visit_at))
                    >= {{ signal_since }}, FALSE) AS shows_interest
    FROM facts f
    JOIN thresholds t ON t.customer_id = f.customer_id
), scored AS (
    SELECT f.customer_id,
           m.p_alive,
           m.expected_purchases_90d,
           m.expected_purchases_horizon
             * CASE WHEN {{ gamma_gamma.available }} AND f.purchase_days > 0
                    THEN ({{ gamma_gamma.q }} - 1) / ({{ gamma_gamma.p }} * f.x + {{ gamma_gamma.q }} - 1)
                         * ({{ gamma_gamma.v }} * {{ gamma_gamma.p }} / ({{ gamma_gamma.q }} - 1))
                         + ({{ gamma_gamma.p }} * f.x) / ({{ gamma_gamma.p }} * f.x + {{ gamma_gamma.q }} - 1)
                         * COALESCE(CAST(f.repeat_day_value AS DOUBLE PRECISION), 0)
                    ELSE CAST(f.avg_order_value AS DOUBLE PRECISION) END AS predicted_clv
    FROM facts f
    LEFT JOIN {{ mart('btyd_scores') }} m ON m.x = f.x AND m.t_x = f.t_x AND m.big_t = f.big_t
), stated AS (
    SELECT customer_id, {{ latest('reason', 'contacted_at', 'contact_id') }} AS reason
    FROM {{ src('contact_outcomes') }} c
    WHERE reason IS NOT NULL
    GROUP BY customer_id
), staged AS (
    SELECT f.customer_id,
           CASE
               WHEN s.is_churned AND f.mailings_since_engagement >= {{ settings.lifecycle.archive_after_ignored_mailings }} THEN 'archived'
               WHEN s.is_negative THEN 'negative'
               WHEN f.first_purchase_day >= {{ as_of }} - {{ settings.lifecycle.newcomer_days }} THEN 'newcomer'
               WHEN f.purchase_days = 1 AND NOT s.shows_interest THEN 'one_off'
               WHEN s.is_churned THEN 'lapsed'
               WHEN f.days_since_last_order > t.at_risk_days THEN 'at_risk'
               WHEN f.purchase_days >= {{ settings.lifecycle.loyal_min_purchase_days }} THEN 'loyal'
               ELSE 'regular'
           END AS lifecycle_stage,
           s.is_churned, s.is_negative, s.shows_interest,
           f.orders >= {{ settings.discounts.driven_min_orders }}
             AND COALESCE(f.promo_order_share >= {{ settings.discounts.driven_share }}, FALSE) AS is_discount_driven,
           m.predicted_clv,
           RANK() OVER (ORDER BY COALESCE(m.predicted_clv, CAST(f.revenue AS DOUBLE PRECISION)) DESC) AS value_rank,
           COUNT(*) OVER () AS customers
    FROM facts f
    JOIN thresholds t ON t.customer_id = f.customer_id
    JOIN signals s ON s.customer_id = f.customer_id
    JOIN scored m ON m.customer_id = f.customer_id
)
SELECT f.customer_id,
       st.lifecycle_stage,
       st.is_churned,
       COALESCE(st.is_negative, FALSE) AS is_negative,
       st.shows_interest,
       CAST(t.churn_threshold_days AS DOUBLE PRECISION) AS churn_threshold_days,
       CAST(t.at_risk_days AS DOUBLE PRECISION) AS at_risk_threshold_days,
       t.churn_basis,
       f.main_category,
       CAST(f.days_since_last_order AS BIGINT) AS days_since_last_order,
       f.last_purchase_day + CAST(FLOOR(t.typical_gap_days + 0.5) AS INTEGER) AS expected_next_order_date,
       f.purchase_days,
       f.revenue,
       f.last_feedback_score,
       f.last_order_at,
       f.last_order_status,
       sr.reason AS last_reason,
       r.rfm_segment,
       r.r_score, r.f_score, r.m_score,
       CAST(m.p_alive AS DOUBLE PRECISION) AS p_alive,
       CAST(m.expected_purchases_90d AS DOUBLE PRECISION) AS expected_purchases_90d,
       CAST(FLOOR(st.predicted_clv * 100 + 0.5) / 100 AS NUMERIC(18, 2)) AS predicted_clv_365d,
       CASE WHEN f.purchase_days = 0 THEN 'none'
            WHEN st.value_rank - 1 < {{ settings.lifecycle.value_tiers[0] }} * st.customers THEN 'high'
            WHEN st.value_rank - 1 < {{ settings.lifecycle.value_tiers[1] }} * st.customers THEN 'medium'
            ELSE 'low' END AS value_tier,
       {%- set stated_offer %}
            CASE sr.reason
            {%- for reason, offer in settings.winback_offers.items() if reason != 'none' %}
                WHEN {{ lit(reason) }} THEN {{ lit(offer) }}
            {%- endfor %}
                ELSE {{ lit(settings.winback_offers['none']) }} END
       {%- endset %}
       CASE WHEN st.lifecycle_stage IN ('lapsed', 'at_risk') THEN
       {%- if settings.discounts.driven_offer is not none and settings.discounts.discount_offers %}
            -- discounts train such customers to wait for the next one (segments.discounts)
            CASE WHEN st.is_discount_driven
                      AND {{ stated_offer }} IN ({{ settings.discounts.discount_offers | map('lit') | join(', ') }})
                 THEN {{ lit(settings.discounts.driven_offer) }}
                 ELSE {{ stated_offer }} END
       {%- else %}
            {{ stated_offer }}
       {%- endif %}
       END AS winback_offer,
       {#- loyalty.tiers, lowest threshold first (sorted by the settings) #}
       {%- set tiers = settings.loyalty.tiers.items() | list %}
       CASE {%- for name, threshold in tiers | reverse %} WHEN f.revenue >= {{ threshold }} THEN {{ lit(name) }}{% endfor %} END AS loyalty_tier,
       CASE {%- for name, threshold in tiers %} WHEN f.revenue < {{ threshold }} THEN {{ lit(name) }}{% endfor %} END AS next_loyalty_tier,
       CAST(CASE {%- for name, threshold in tiers %} WHEN f.revenue < {{ threshold }} THEN {{ threshold }} - f.revenue{% endfor %} END
            AS NUMERIC(18, 2)) AS amount_to_next_tier,
       COALESCE(CASE {%- for name, threshold in tiers %} WHEN f.revenue < {{ threshold }}
                THEN {{ threshold }} - f.revenue <= {{ settings.loyalty.close_share }} * {{ threshold }}{% endfor %} END,
                FALSE) AS close_to_next_tier,
       st.is_discount_driven,
       f.promo_order_share,
       -- happy regulars, and happy one-off buyers of goods bought once in years: they will
       -- not buy again soon but will recommend (segments.advocates)
       COALESCE(f.last_feedback_score >= {{ settings.advocates.min_score }}
                AND (st.lifecycle_stage IN ('loyal', 'regular')
                     OR (st.lifecycle_stage = 'one_off'
                         AND (mc.typical_gap_days > {{ settings.advocates.long_cycle_days }}
                              {%- if settings.advocates.long_cycle_categories %}
                              OR f.main_category IN ({{ settings.advocates.long_cycle_categories | map('lit') | join(', ') }})
                              {%- endif %}))),
                FALSE) AS is_advocate
FROM facts f
JOIN (SELECT customer_id, churn_basis, typical_gap_days, at_risk_days, churn_days AS churn_threshold_days FROM thresholds) t
  ON t.customer_id = f.customer_id
JOIN staged st ON st.customer_id = f.customer_id
LEFT JOIN {{ mart('customer_rfm') }} r ON r.customer_id = f.customer_id
LEFT JOIN scored m ON m.customer_id = f.customer_id
LEFT JOIN stated sr ON sr.customer_id = f.customer_id
LEFT JOIN {{ mart('category_cycles') }} mc ON mc.category = f.main_category AND mc.basis IN ('data', 'config')
